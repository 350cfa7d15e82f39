"""Results of one or more recipe runs (exp dirs), read only from the files the stages wrote.

    runs = [collect_run("recipes/an4/exp")]          # one run = one exp dir (one seed)
    rows = summarise(runs)                            # per system, mean +- std over runs
    write_report(["recipes/an4/exp"], "recipes/an4/exp/report")

What is read, per system directory (docs/ARTIFACTS.md):
- `eval_dev.json`, `eval_test.json` (eval-frames): frame accuracy and CE (nats/frame);
- `decode_test/wer.json` (decode): WER with S/D/I, acoustic scale, real-time factor;
  `decode_test/tuning.json`: dev WER at each (acoustic scale, word penalty), the chosen pair;
- `final.pt` (parameters), `metrics.jsonl` (training curves), `distill.json` (student's loss / teacher);
- `<exp>/regularizer/regularizer.json` (paper §6), `<exp>/.done/<step>` (step durations, seconds).

How systems are found in an exp dir: `mono/`, `tri1/`... (final.mdl + decode_test/) are GMMs; a
dir with `ensemble.json` is an ensemble (members listed there; `combine_<arith|geo>/` hold the
combined scores); a dir with `distill.json` is a student; any other dir with `final.pt` is a
single DNN (the baseline). A number that no file holds is left empty, never filled in.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from asr_kd.errors import AsrKdError
from asr_kd.io import read_json

log = logging.getLogger(__name__)

# Quoted from the literature (DESIGN.md §1 and §5), shown next to our numbers, never mixed into them.
REFERENCES = [
    ("Kaldi egs/an4/s5 mono (GMM)", "AN4 test WER", "10.61%"),
    ("Kaldi egs/an4/s5 tri1 (GMM)", "AN4 test WER", "10.48%"),
    ("Kaldi egs/an4/s5 tri3 SAT (GMM)", "AN4 test WER", "5.95%"),
    ("ESPnet2 Transformer (end-to-end)", "AN4 test WER", "7.4%"),
    ("Hinton et al. 2015 Table 1: baseline", "frame acc / WER (2000 h)", "58.9% / 10.9%"),
    ("Hinton et al. 2015 Table 1: 10x ensemble", "frame acc / WER (2000 h)", "61.1% / 10.7%"),
    ("Hinton et al. 2015 Table 1: distilled", "frame acc / WER (2000 h)", "60.8% / 10.7% (~86% of gain kept)"),
]

KINDS = ("gmm", "baseline", "member", "ensemble", "student")
METRICS = ("params", "dev_frame_acc", "test_frame_acc", "dev_ce", "test_ce", "dev_wer", "test_wer",
           "substitutions", "deletions", "insertions", "words", "rtf", "acoustic_scale", "word_penalty",
           "gain_kept")


@dataclass
class System:
    """One row of one run: what it is and every number found for it."""

    name: str
    kind: str  # one of KINDS
    path: Path
    values: dict = field(default_factory=dict)  # METRICS keys that some file provided
    temperature: float | None = None  # students: distillation temperature
    combination: str | None = None  # ensembles: their combination; students: their teacher's
    curves: dict = field(default_factory=dict)  # label -> list of metrics.jsonl records


@dataclass
class Run:
    exp_dir: Path
    systems: list[System]
    regularizer: dict | None  # regularizer.json (title, rows) if the §6 experiment ran
    step_seconds: dict[str, int]


# ------------------------------------------------------------------ reading one exp dir
def collect_run(exp_dir: str | os.PathLike) -> Run:
    """Every system of one exp dir, with its numbers, in table order."""
    exp = Path(exp_dir)
    if not exp.is_dir():
        raise AsrKdError(f"{exp}: not a directory")
    systems: list[System] = []
    for d in sorted(p for p in exp.iterdir() if p.is_dir() and not p.name.startswith(".")):
        systems += _systems_in(d)
    if not systems:
        raise AsrKdError(f"{exp}: no results found (no decode_test/wer.json, eval_*.json or final.pt below it)")
    systems.sort(key=lambda s: (KINDS.index(s.kind), s.temperature or 0.0, _natural(s.name)))
    add_gain_kept(systems)
    reg = exp / "regularizer" / "regularizer.json"
    return Run(exp, systems, read_json(reg) if reg.is_file() else None, _step_seconds(exp / ".done"))


def _natural(name: str) -> tuple:
    """member_10 after member_9."""
    head, _, tail = name.rpartition("_")
    return (head, int(tail)) if tail.isdigit() else (name, 0)


def _systems_in(d: Path) -> list[System]:
    if (d / "ensemble.json").is_file():
        return _ensemble_systems(d)
    if (d / "distill.json").is_file():
        return [_student(d)]
    if (d / "final.pt").is_file():
        return [_dnn(d, d.name, "baseline")]
    if (d / "final.mdl").is_file() and (d / "decode_test" / "wer.json").is_file():
        return [_scored(System(d.name, "gmm", d))]
    return []


def _ensemble_systems(d: Path) -> list[System]:
    members = [d / name for name in read_json(d / "ensemble.json")["members"]]
    out = [_dnn(m, f"{d.name}/{m.name}", "member") for m in members if (m / "final.pt").is_file()]
    total = sum(m.values.get("params", 0) for m in out) or None
    for combo in sorted(d.glob("combine_*")):
        how = combo.name.removeprefix("combine_")
        s = _scored(System(f"{d.name} ({how}, K={len(members)})", "ensemble", combo, combination=how))
        if total:
            s.values["params"] = total
        out.append(s)
    groups = sorted(d.glob("group_*/metrics.jsonl"))
    if groups and out:
        out[0].curves.update({f"{d.name}/{g.parent.name}": _read_jsonl(g) for g in groups})
    return out


def _student(d: Path) -> System:
    s = _dnn(d, d.name, "student")
    record = read_json(d / "distill.json")
    s.temperature = float(record["loss"]["temperature"])
    s.combination = (record.get("teacher") or {}).get("combination")
    return s


def _dnn(d: Path, name: str, kind: str) -> System:
    s = _scored(System(name, kind, d))
    s.values["params"] = count_params(d / "final.pt")
    if (d / "metrics.jsonl").is_file():
        s.curves[name] = _read_jsonl(d / "metrics.jsonl")
    return s


def _scored(s: System) -> System:
    """Frame metrics (eval_<set>.json) and WER (decode_test/) into s.values, where present."""
    for part in ("dev", "test"):
        f = s.path / f"eval_{part}.json"
        if f.is_file():
            ev = read_json(f)
            s.values[f"{part}_frame_acc"], s.values[f"{part}_ce"] = ev["frame_acc"], ev["ce"]
    wer_file = s.path / "decode_test" / "wer.json"
    if wer_file.is_file():
        w = read_json(wer_file)
        s.values.update(test_wer=w["wer"], substitutions=w["substitutions"], deletions=w["deletions"],
                        insertions=w["insertions"], words=w["words"])
        for key, src in (("rtf", "real_time_factor"), ("acoustic_scale", "acoustic_scale"),
                         ("word_penalty", "word_penalty")):
            if src in w:
                s.values[key] = w[src]
    tuning = s.path / "decode_test" / "tuning.json"
    if tuning.is_file():
        t = read_json(tuning)
        chosen = (t["chosen_acoustic_scale"], t["chosen_word_penalty"])
        s.values["dev_wer"] = next(r["wer"] for r in t["dev"] if (r["acoustic_scale"], r["word_penalty"]) == chosen)
    return s


def count_params(final_pt: Path) -> int:
    """Number of trainable weights in a final.pt (state dict tensors, buffers of norms excluded)."""
    import torch

    blob = torch.load(final_pt, map_location="cpu", weights_only=False)
    state = blob.get("state_dict", blob)
    return int(sum(v.numel() for k, v in state.items()
                   if torch.is_tensor(v) and not k.endswith(("running_mean", "running_var", "num_batches_tracked",
                                                              "mean", "inv_std"))))


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise AsrKdError(f"{path}:{lineno}: not JSON: {e}") from e
    return rows


def _step_seconds(done_dir: Path) -> dict[str, int]:
    if not done_dir.is_dir():
        return {}
    out = {}
    for f in sorted(done_dir.iterdir()):
        text = f.read_text(encoding="utf-8").strip()
        if text.isdigit():  # a marker of the older recipe
            out[f.name] = int(text)
        elif text.startswith("{") and not f.name.endswith(".started"):  # asr_kd.steps.recipe: JSON with "seconds"
            seconds = json.loads(text).get("seconds")
            if isinstance(seconds, int):
                out[f.name] = seconds
    return out


# ------------------------------------------------------------------ derived numbers
def gain_kept(student: float, baseline: float, ensemble: float) -> float | None:
    """Share of the ensemble's improvement over the baseline that the student keeps (1.0 = all)."""
    if ensemble == baseline:
        return None
    return (student - baseline) / (ensemble - baseline)


def add_gain_kept(systems: list[System]) -> None:
    """Students' gain kept on test frame accuracy, against the baseline and the ensemble combined
    the way their teacher was (a cached geo teacher -> the geo row)."""
    baselines = [s for s in systems if s.kind == "baseline" and "test_frame_acc" in s.values]
    if len(baselines) != 1:
        return
    base = baselines[0].values["test_frame_acc"]
    ensembles = {s.combination: s for s in systems if s.kind == "ensemble" and "test_frame_acc" in s.values}
    for s in systems:
        teacher = ensembles.get(s.combination or "arith") or next(iter(ensembles.values()), None)
        if s.kind == "student" and teacher and "test_frame_acc" in s.values:
            g = gain_kept(s.values["test_frame_acc"], base, teacher.values["test_frame_acc"])
            if g is not None:
                s.values["gain_kept"] = g


# ------------------------------------------------------------------ several runs (seeds)
def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    if min(values) == max(values):  # exactly 0, not float noise like 8.5e-18
        return values[0], 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarise(runs: list[Run]) -> list[dict]:
    """One row per system name over all runs: {name, kind, n, <metric>: (mean, std|None)}.

    Also one "members (mean of K)" row per run set: the members are seeds of one recipe, the
    spread a single model has from its seed alone.
    """
    order: list[tuple[str, str]] = []
    values: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        for s in run.systems:
            if s.name not in values:
                order.append((s.name, s.kind))
                values[s.name] = {}
            for k, v in s.values.items():
                values[s.name].setdefault(k, []).append(float(v))
    rows = [{"name": name, "kind": kind, "n": max((len(v) for v in values[name].values()), default=0),
             **{k: mean_std(v) for k, v in values[name].items()}} for name, kind in order]
    members = [s for run in runs for s in run.systems if s.kind == "member"]
    if len(members) > 1:
        pooled: dict[str, list[float]] = {}
        for s in members:
            for k, v in s.values.items():
                pooled.setdefault(k, []).append(float(v))
        at = max(i for i, r in enumerate(rows) if r["kind"] == "member") + 1
        rows.insert(at, {"name": f"members: mean +- std of {len(members)}", "kind": "members", "n": len(members),
                         **{k: mean_std(v) for k, v in pooled.items()}})
    return rows


# ------------------------------------------------------------------ RESULTS.md
COLUMNS = [  # (header, metric, formatter of one number)
    ("params", "params", lambda v: f"{v / 1e6:.2f}M"),
    ("dev frame acc %", "dev_frame_acc", lambda v: f"{100 * v:.2f}"),
    ("test frame acc %", "test_frame_acc", lambda v: f"{100 * v:.2f}"),
    ("dev CE", "dev_ce", lambda v: f"{v:.3f}"),
    ("test CE", "test_ce", lambda v: f"{v:.3f}"),
    ("dev WER %", "dev_wer", lambda v: f"{v:.2f}"),
    ("test WER %", "test_wer", lambda v: f"{v:.2f}"),
    ("S/D/I", None, None),
    ("ac. scale", "acoustic_scale", lambda v: f"{v:.3g}"),
    ("word pen.", "word_penalty", lambda v: f"{v:.2g}"),
    ("RTF", "rtf", lambda v: f"{v:.4f}"),
    ("gain kept %", "gain_kept", lambda v: f"{100 * v:.1f}"),
]


def cell(row: dict, metric: str, fmt) -> str:
    if metric not in row:
        return ""
    mean, std = row[metric]
    return fmt(mean) if std is None else f"{fmt(mean)} ± {fmt(std)}"


def main_table(rows: list[dict]) -> str:
    lines = ["| system | " + " | ".join(h for h, _, _ in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for row in rows:
        cells = []
        for _, metric, fmt in COLUMNS:
            if metric is None:
                sdi = [row.get(k) for k in ("substitutions", "deletions", "insertions")]
                cells.append("/".join(f"{round(m[0], 1):g}" for m in sdi) if all(sdi) else "")  # means over runs
            else:
                cells.append(cell(row, metric, fmt))
        name = row["name"] + (f" (n={row['n']})" if row["n"] > 1 and row["kind"] != "members" else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def sweep_table(rows: list[dict], runs: list[Run]) -> str:
    temps = {s.name: s.temperature for run in runs for s in run.systems if s.kind == "student"}
    students = sorted((r for r in rows if r["kind"] == "student"), key=lambda r: temps[r["name"]])
    if not students:
        return ""
    lines = ["| T | dev frame acc % | test frame acc % | test WER % | gain kept % |", "|---|---|---|---|---|"]
    for r in students:
        lines.append(f"| {temps[r['name']]:g} | " + " | ".join(cell(r, m, f) for _, m, f in COLUMNS
                     if m in ("dev_frame_acc", "test_frame_acc", "test_wer", "gain_kept")) + " |")
    return "\n".join(lines) + "\n"


def regularizer_table(runs: list[Run]) -> str:
    parts = []
    for run in runs:
        if run.regularizer:
            parts.append(f"{run.regularizer['title']} ({run.exp_dir})\n\n"
                         "| system | train frame acc % | dev frame acc % | test frame acc % |\n|---|---|---|---|\n"
                         + "".join(f"| {r['system']} | " + " | ".join(
                             f"{100 * r[k]:.2f}" if k in r else "" for k in
                             ("train_frame_acc", "dev_frame_acc", "test_frame_acc")) + " |\n"
                             for r in run.regularizer["rows"]))
    return "\n".join(parts)


def references_table() -> str:
    return ("| reference | measure | value |\n|---|---|---|\n"
            + "".join(f"| {a} | {b} | {c} |\n" for a, b, c in REFERENCES))


def timing_table(runs: list[Run]) -> str:
    lines = []
    for run in runs:
        if run.step_seconds:
            total = sum(run.step_seconds.values())
            steps = ", ".join(f"{k} {v}" for k, v in run.step_seconds.items())
            lines.append(f"- `{run.exp_dir}`: {total} s over {len(run.step_seconds)} steps ({steps})")
    return "\n".join(lines) + ("\n" if lines else "")


# ------------------------------------------------------------------ the report
def write_report(exp_dirs: list[str | os.PathLike], out_dir: str | os.PathLike, plots: bool = True) -> Path:
    """RESULTS.md + results.json (+ PNG plots) in out_dir from the exp dirs (several = seeds)."""
    from asr_kd.io import write_json, write_text

    runs = [collect_run(d) for d in exp_dirs]
    rows = summarise(runs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = []
    if plots:
        from asr_kd.report.plots import plot_temperature_sweep, plot_training_curves

        images = [p for p in (plot_training_curves(runs, out / "training_curves.png"),
                              plot_temperature_sweep(runs, out / "temperature_sweep.png")) if p]
    write_json(out / "results.json", results_json(runs, rows))
    write_text(out / "RESULTS.md", results_markdown(runs, rows, [p.name for p in images]))
    log.info("wrote %s", out / "RESULTS.md")
    return out / "RESULTS.md"


def results_json(runs: list[Run], rows: list[dict]) -> dict:
    return {
        "exp_dirs": [str(r.exp_dir) for r in runs],
        "summary": [{k: ({"mean": v[0], "std": v[1]} if isinstance(v, tuple) else v) for k, v in r.items()}
                    for r in rows],
        "runs": [{"exp_dir": str(r.exp_dir), "step_seconds": r.step_seconds, "regularizer": r.regularizer,
                  "systems": [{"name": s.name, "kind": s.kind, "path": str(s.path), "temperature": s.temperature,
                               "combination": s.combination, **s.values} for s in r.systems]} for r in runs],
    }


def results_markdown(runs: list[Run], rows: list[dict], images: list[str]) -> str:
    seeds = (f"{len(runs)} runs (seeds); cells are mean ± sample std over them" if len(runs) > 1
             else "one run; the members row gives the seed-to-seed spread of one model")
    parts = [
        "# Results\n",
        "Generated by `asr-kd report` from " + ", ".join(f"`{r.exp_dir}`" for r in runs) + f" ({seeds}).\n",
        "Frame accuracy and CE (nats/frame) are against the tri1 forced alignments; WER on test is decoded "
        "with the acoustic scale and word penalty that were best on dev (dev WER column = dev at that setting). RTF counts the "
        "decoder only. Gain kept = (student − baseline) / (ensemble − baseline) on test frame accuracy, "
        "against the ensemble combined as the student's teacher was.\n",
        main_table(rows),
    ]
    sweep = sweep_table(rows, runs)
    if sweep:
        parts += ["## Temperature sweep (distilled students)\n", sweep]
    reg = regularizer_table(runs)
    if reg:
        parts += ["## Soft targets as a regularizer (paper §6)\n", reg]
    parts += ["## External references (quoted, not measured here)\n", references_table()]
    if images:
        parts += ["## Plots\n", "".join(f"![{Path(i).stem}]({i})\n" for i in images)]
    timing = timing_table(runs)
    if timing:
        parts += ["## Step durations (s, from exp/.done markers)\n", timing]
    return "\n".join(parts)
