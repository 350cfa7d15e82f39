"""The "kinds of distillation" table: one row per method, all read from the files the runs wrote.

    write_kinds_report("exp/kinds/report", [KindsRow("hint", "exp/kinds/hint", "exp/kinds/scores/hint", "kinds_hint")],
                       done_dir="exp/.done", seed=1)

Per row: the model dir (final.pt: parameters; metrics.jsonl, or for a mutual-learning peer its
group's: epochs and summed epoch seconds), a scores dir (eval_dev/test.json, decode_test/ as
written by the recipe's decode step) and the recipe step that trained it (`<done_dir>/<step>`
holds its wall seconds). A number no file holds stays empty. The table says how many seeds it
has (one) and the epoch budget, since both limit what a difference between rows means.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from asr_kd.errors import AsrKdError
from asr_kd.io import write_json, write_text
from asr_kd.report.report import System, _read_jsonl, _scored, count_params

log = logging.getLogger(__name__)

# What each method of recipes/*/run_kinds.sh is (rows with other names are shown with their name only).
METHODS = {
    "baseline": "hard labels only (hard_ce)",
    "distill": "Hinton et al. §4: soft_ce at T + 0.5 hard_ce, dnn ensemble teacher",
    "hint": "FitNets: + hint (MSE of a projected student layer vs a deeper teacher's layer)",
    "distilbert": "DistilBERT: init from a deeper teacher's layers + hidden_cos",
    "sp": "similarity-preserving: + sp (batch Gram matrices of the last hidden layers)",
    "mutual": "mutual learning: peers, hard_ce + KL to the other peers, no teacher (peer 0 shown)",
    "mixed_teacher": "teacher of different architectures: dnn + tdnn members",
    "qat_fp32": "quantisation-aware (fake int8) distillation, scored in fp32",
    "qat_int8": "quantisation-aware (fake int8) distillation, scored in dynamic int8",
    "ptq_int8": "the §4 student above, post-training dynamic int8",
    "teacher_deep": "(the hidden-layer teacher: deeper dnn, hard labels)",
}


@dataclass
class KindsRow:
    name: str
    model_dir: Path
    scores_dir: Path
    step: str

    def __post_init__(self):
        self.model_dir, self.scores_dir = Path(self.model_dir), Path(self.scores_dir)


def describe(name: str) -> str:
    if name.startswith("born_again_g"):
        return f"born-again generation {name.removeprefix('born_again_g')} (from the previous one; 1 = from the ensemble)"
    return METHODS.get(name, "")


def training_curve(model_dir: Path) -> list[dict]:
    """metrics.jsonl of the run that trained the model (a mutual-learning peer's is its group's)."""
    for path in (model_dir / "metrics.jsonl", model_dir.parent / "group" / "metrics.jsonl"):
        if path.is_file():
            return _read_jsonl(path)
    return []


def row_values(row: KindsRow, done_dir: Path) -> dict:
    if not (row.model_dir / "final.pt").is_file():  # still training, or its step failed: shown as such
        log.warning("%s: no final.pt yet; row %r is marked not finished", row.model_dir, row.name)
        return {"name": row.name, "method": describe(row.name), "model_dir": str(row.model_dir), "finished": False}
    values = dict(_scored(System(row.name, "student", row.scores_dir)).values)
    curve = training_curve(row.model_dir)
    step_file = done_dir / row.step
    values.update(params=count_params(row.model_dir / "final.pt"), epochs=len(curve) or None,
                  train_s=round(sum(r.get("epoch_s", 0.0) for r in curve), 1) if curve else None,
                  step_s=int(step_file.read_text().strip()) if step_file.is_file() else None)
    return {"name": row.name, "method": describe(row.name), "model_dir": str(row.model_dir), "finished": True,
            **values}


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def kinds_table(rows: list[dict]) -> str:
    lines = ["| row | method | params | epochs | train s | step s | dev frame acc % | test frame acc % "
             "| dev WER % | test WER % |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if not r["finished"]:
            lines.append(f"| {r['name']} | {r['method']} | (not finished) |" + " |" * 7)
            continue
        acc = {k: None if r.get(k) is None else 100 * r[k] for k in ("dev_frame_acc", "test_frame_acc")}
        lines.append(f"| {r['name']} | {r['method']} | {_fmt(r.get('params'), ',')} | {_fmt(r.get('epochs'), 'd')} "
                     f"| {_fmt(r.get('train_s'), '.1f')} | {_fmt(r.get('step_s'), 'd')} "
                     f"| {_fmt(acc['dev_frame_acc'], '.2f')} | {_fmt(acc['test_frame_acc'], '.2f')} "
                     f"| {_fmt(r.get('dev_wer'), '.2f')} | {_fmt(r.get('test_wer'), '.2f')} |")
    return "\n".join(lines)


def write_kinds_report(out_dir: str | os.PathLike, rows: list[KindsRow], *, done_dir: str | os.PathLike,
                       seed: int) -> Path:
    """KINDS.md and kinds.json into out_dir; returns the markdown path."""
    if not rows:
        raise AsrKdError("report-kinds: no rows given (--row NAME MODEL_DIR SCORES_DIR STEP)")
    values = [row_values(r, Path(done_dir)) for r in rows]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    epochs = sorted({v["epochs"] for v in values if v.get("epochs")}) or ["none finished"]
    text = "\n".join([
        "# Kinds of distillation", "",
        f"One seed (seed {seed}) per row, not a mean over seeds: differences of a few tenths of a point are "
        f"within seed noise. Epochs run per model: {', '.join(map(str, epochs))} (a short budget, the same "
        "max_epochs for every row). `train s`: summed epoch seconds of the model's training (mutual learning: "
        "all peers together; born-again: that generation); `step s`: wall seconds of the recipe step that "
        "made the row (loading, dev evaluation and every generation or peer included; int8 rows share their "
        "model's step). Times come from a CPU shared with other jobs: compare them only roughly.", "",
        kinds_table(values), ""])
    write_text(out / "KINDS.md", text)
    write_json(out / "kinds.json", {"seed": seed, "rows": values})
    return out / "KINDS.md"
