"""The paper's distillation experiments as functions: a temperature / hard-weight sweep (§4), the
student vs baseline vs teacher comparison with the share of the teacher's gain kept (Table 1), and
soft targets as a regulariser on a small fraction of the data (§6).

Each run is an ordinary exp dir under `exp_root`; the summary (JSON + markdown table) is written
from the evaluated models, never typed in. Reruns resume/skip finished runs (the trainer resumes
from checkpoints; a finished run's final epoch is just reloaded).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

from asr_kd.distill.distill import Teacher, distill, transfer_subset
from asr_kd.distill.gain import gain_kept
from asr_kd.distill.losses import LossConfig
from asr_kd.distill.teachers import OnlineTeacher
from asr_kd.errors import AsrKdError
from asr_kd.io import write_json, write_text
from asr_kd.nnet.frames import FrameData
from asr_kd.nnet.infer import evaluate
from asr_kd.nnet.train import TrainConfig, load_model, read_metrics, train_frame_classifier

log = logging.getLogger(__name__)


def sweep(student_cfg: TrainConfig, teacher: Teacher, transfer_set: FrameData, *, dev: FrameData,
          exp_root: str | os.PathLike, temperatures: Sequence[float] = (1, 2, 5, 10),
          hard_weights: Sequence[float] = (0.0, 0.5), soft_term: str = "soft_ce",
          test: FrameData | None = None) -> list[dict]:
    """One student per (T, hard weight); rows with dev (and test) frame accuracy, written as sweep.{json,md}."""
    exp_root = Path(exp_root)
    rows = []
    for t in temperatures:
        for w in hard_weights:
            loss = LossConfig(terms={soft_term: 1.0, "hard_ce": float(w)}, temperature=float(t))
            run = exp_root / f"T{t:g}_hard{w:g}"
            result = distill(student_cfg, teacher, transfer_set, loss, dev=dev, exp_dir=run)
            row = {"temperature": float(t), "hard_weight": float(w), "soft_term": soft_term, "exp_dir": str(run),
                   "best_epoch": result.train.best_epoch, **scores((result.model, result.spec), dev=dev, test=test)}
            rows.append(row)
            log.info("sweep T=%g hard=%g: %s", t, w, row)
    columns = ["temperature", "hard_weight", "best_epoch", "dev_frame_acc", "dev_ce"]
    columns += ["test_frame_acc", "test_ce"] if test is not None else []
    write_summary(exp_root / "sweep", rows, columns, f"Distillation sweep ({soft_term} weight 1.0)")
    return rows


def regularizer_experiment(student_cfg: TrainConfig, teacher: Teacher, train: FrameData, *, dev: FrameData,
                           test: FrameData, exp_root: str | os.PathLike, fraction: float = 0.03, seed: int = 0,
                           loss_cfg: LossConfig | None = None, baseline_dir: str | os.PathLike | None = None) -> list[dict]:
    """Paper §6: hard targets vs the full-data teacher's soft targets on a random `fraction` of the
    training utterances, next to the same architecture trained on all of it.

    Train accuracy is measured on the set each model was trained on (as in the paper's table); the
    best dev epoch is kept for every model (the early stopping the paper needed for hard targets).
    `baseline_dir`: an already trained full-data model of the student architecture, reused.
    """
    exp_root = Path(exp_root)
    loss_cfg = loss_cfg or LossConfig(terms={"soft_ce": 1.0}, temperature=2.0)
    subset = transfer_subset(train, fraction, seed)
    if baseline_dir is None:
        baseline_dir = exp_root / "baseline_full"
        train_frame_classifier(student_cfg, train, dev, exp_dir=baseline_dir)
    baseline = load_model(baseline_dir)
    hard_dir = exp_root / "hard_subset"
    train_frame_classifier(student_cfg, subset, dev, exp_dir=hard_dir)
    soft = distill(student_cfg, teacher, subset, loss_cfg, dev=dev, exp_dir=exp_root / "soft_subset")
    pct = f"{100 * len(subset.utt_ids) / len(train.utt_ids):.1f}% utts"
    rows = [
        {"system": "baseline (100% train, hard targets)", **epochs(baseline_dir),
         **scores(baseline, train=train, dev=dev, test=test)},
        {"system": f"hard targets ({pct})", **epochs(hard_dir), **scores(load_model(hard_dir), train=subset, dev=dev, test=test)},
        {"system": f"soft targets ({pct}, {describe_loss(loss_cfg)})", **epochs(soft.exp_dir),
         **scores((soft.model, soft.spec), train=subset, dev=dev, test=test)},
    ]
    if isinstance(teacher, OnlineTeacher):
        rows.append({"system": f"teacher ({len(teacher.ensemble)} members, {teacher.combination}, 100% train)",
                     **scores(teacher.ensemble, train=train, dev=dev, test=test, combine=teacher.combination)})
    columns = ["system", "train_frame_acc", "dev_frame_acc", "test_frame_acc", "best_epoch", "epochs"]
    title = (f"Soft targets as a regularizer: {len(subset.utt_ids)} of {len(train.utt_ids)} training utterances "
             f"({subset.num_frames} of {train.num_frames} frames, seed {seed})")
    write_summary(exp_root / "regularizer", rows, columns, title)
    return rows


def compare(baseline_dir: str | os.PathLike, teacher: OnlineTeacher, student_dirs: Sequence[str | os.PathLike], *,
            sets: dict[str, FrameData], out_stem: str | os.PathLike) -> list[dict]:
    """Baseline (same architecture as the students, hard labels), the teacher and the students on each
    labelled set, with the share of the teacher's frame-accuracy gain over the baseline each student keeps
    (paper Table 1: 86%)."""
    base = {"system": f"baseline (hard labels): {baseline_dir}", **scores(load_model(baseline_dir), **sets)}
    ens = {"system": f"teacher ({len(teacher.ensemble)} members, {teacher.combination})",
           **scores(teacher.ensemble, combine=teacher.combination, **sets)}
    rows = [base, ens]
    for d in student_dirs:
        row = {"system": f"student: {d}", **scores(load_model(d), **sets)}
        for name in sets:
            key = f"{name}_frame_acc"
            kept = gain_kept(row[key], base[key], ens[key])
            row[f"{name}_gain_kept"] = None if kept is None else round(kept, 4)
        rows.append(row)
    columns = ["system"] + [c for name in sets for c in (f"{name}_frame_acc", f"{name}_gain_kept")]
    write_summary(Path(out_stem), rows, columns, "Distilled students vs baseline and teacher (frame accuracy)")
    return rows


def scores(scorer, *, combine: str = "arith", **sets: FrameData | None) -> dict:
    """`<set>_frame_acc` and `<set>_ce` of a model / ensemble on each labelled set given."""
    out = {}
    for name, data in sets.items():
        if data is None:
            continue
        metrics = evaluate(scorer, data, combine=combine)
        out[f"{name}_frame_acc"], out[f"{name}_ce"] = round(metrics["frame_acc"], 5), round(metrics["ce"], 5)
    return out


def epochs(exp_dir: str | os.PathLike) -> dict:
    """Best (kept) and last epoch of a run, from its metrics.jsonl: shows how much early stopping cut."""
    path = Path(exp_dir) / "metrics.jsonl"
    if not path.is_file():
        return {}
    records = [r for r in read_metrics(exp_dir) if "dev_frame_acc" in r]
    if not records:
        return {}
    best = max(records, key=lambda r: r["dev_frame_acc"])
    return {"best_epoch": best["epoch"], "epochs": records[-1]["epoch"]}


def describe_loss(cfg: LossConfig) -> str:
    terms = " + ".join(f"{w:g}*{name}" for name, w in cfg.terms.items() if w)
    return f"{terms}, T={cfg.temperature:g}"


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """Accuracies as percentages; a column a row lacks is left empty."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(k, row.get(k, "")) for k in columns) + " |")
    return "\n".join(lines) + "\n"


def _cell(column: str, value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and column.endswith(("frame_acc", "gain_kept")):
        return f"{100 * value:.2f}%"
    return f"{value:g}" if isinstance(value, float) else str(value)


def write_summary(stem: Path, rows: list[dict], columns: list[str], title: str) -> None:
    """stem.json (all fields) and stem.md (the table), atomically; the table is also printed."""
    if not rows:
        raise AsrKdError(f"{stem}: nothing to summarise (no runs)")
    table = markdown_table(rows, columns)
    write_json(stem.with_suffix(".json"), {"title": title, "rows": rows})
    write_text(stem.with_suffix(".md"), f"# {title}\n\n{table}")
    print(f"{title}\n{table}", flush=True)
