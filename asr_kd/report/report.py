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

How systems are found in an exp dir: a dir's `system.json` (written by the stage that made it:
kind gmm | dnn | ensemble | student, seed, sizes, a student's teacher, T and loss weights) says
what it is. Exp dirs from before system.json existed are still read by the old rules: `mono/`,
`tri1/`... (final.mdl + decode_test/) are GMMs; a dir with `ensemble.json` is an ensemble (members
listed there; `combine_<arith|geo>/` hold the combined scores); a dir with `distill.json` is a
student; any other dir with `final.pt` is a single DNN (the baseline). A number that no file holds
is left empty, never filled in.

What the report decides, and on what (so no headline number is picked on test):
- the headline student is the one with the best mean DEV frame accuracy over the runs (all T and
  loss weights compete; the sweep keeps them all as its own table). Dev frame accuracy rather than
  dev WER: it is what distillation optimises and what gain kept measures, and it is counted over
  tens of thousands of dev frames, while dev WER on AN4 (91 utterances) moves in steps of one error;
- gain kept (distill/gain.py): only where the ensemble beats the baseline by more than the seed
  spread (the baseline's std over runs; with one run, the std of the ensemble's members, which are
  seeds of the same recipe); over runs the ratio of mean gains with per-run values and a bootstrap
  interval;
- student vs baseline and vs ensemble WER: paired bootstrap over test utterances (decode/significance.py).

RESULTS.md is the list of sections in `SECTIONS` (one function each: context -> markdown, "" to
leave out): another table is one more function in that list.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from asr_kd.errors import AsrKdError
from asr_kd.io import read_json, read_lines
from asr_kd.report.findings import Findings, describe, find
from asr_kd.report.specialists import specialist_section, specialist_tables

log = logging.getLogger(__name__)

# Quoted from the literature (DESIGN.md §1 and §5), shown next to our numbers, never mixed into them:
# per corpus, only under the corpus the report is about; the paper's own numbers under every corpus.
CORPUS_REFERENCES = {
    "an4": [
        ("Kaldi egs/an4/s5 mono (GMM)", "AN4 test WER", "10.61%"),
        ("Kaldi egs/an4/s5 tri1 (GMM)", "AN4 test WER", "10.48%"),
        ("Kaldi egs/an4/s5 tri3 SAT (GMM)", "AN4 test WER", "5.95%"),
        ("ESPnet2 Transformer (end-to-end)", "AN4 test WER", "7.4%"),
    ],
    "yesno": [("Kaldi egs/yesno/s5 (GMM, monophone)", "yesno test WER", "0.00%")],
    "timit": [
        ("PyTorch-Kaldi MLP, MFCC (Ravanelli et al. 2019)", "TIMIT core test PER (39 phones)", "18.2%"),
        ("PyTorch-Kaldi MLP, fMLLR (Ravanelli et al. 2019)", "TIMIT core test PER (39 phones)", "16.7%"),
    ],
}
REFERENCES = [
    ("Hinton et al. 2015 Table 1: baseline", "frame acc / WER (2000 h)", "58.9% / 10.9%"),
    ("Hinton et al. 2015 Table 1: 10x ensemble", "frame acc / WER (2000 h)", "61.1% / 10.7%"),
    ("Hinton et al. 2015 Table 1: distilled", "frame acc / WER (2000 h)", "60.8% / 10.7% (~86% of gain kept)"),
]

KINDS = ("gmm", "baseline", "member", "ensemble", "student")
METRICS = ("params", "dev_frame_acc", "test_frame_acc", "dev_ce", "test_ce", "dev_wer", "test_wer",
           "substitutions", "deletions", "insertions", "words", "rtf", "acoustic_scale", "word_penalty",
           "test_wer_unmapped")
SYSTEM_KIND = {"gmm": "gmm", "dnn": "baseline", "ensemble": "ensemble", "student": "student"}  # system.json -> row


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
    loss_terms: dict = field(default_factory=dict)  # students: loss term -> weight

    @property
    def setting(self) -> str:
        """A student's hyper-parameters in words: 'T=2, hard_ce 0.5, soft_ce 1'."""
        terms = ", ".join(f"{k} {v:g}" for k, v in sorted(self.loss_terms.items()))
        return f"T={self.temperature:g}" + (f", {terms}" if terms else "")


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
    reg = exp / "regularizer" / "regularizer.json"
    return Run(exp, systems, read_json(reg) if reg.is_file() else None, _step_seconds(exp / ".done"))


def _natural(name: str) -> tuple:
    """member_10 after member_9."""
    head, _, tail = name.rpartition("_")
    return (head, int(tail)) if tail.isdigit() else (name, 0)


def _systems_in(d: Path) -> list[System]:
    if (d / "system.json").is_file():
        return _described_systems(d, read_json(d / "system.json"))
    return _guessed_systems(d)


def _described_systems(d: Path, record: dict) -> list[System]:
    """A dir whose stage wrote system.json: its kind says what it is."""
    kind = SYSTEM_KIND.get(record.get("kind"))
    if kind is None:
        raise AsrKdError(f"{d / 'system.json'}: unknown kind {record.get('kind')!r}; known: {', '.join(SYSTEM_KIND)}")
    if kind == "ensemble":
        return _ensemble_systems(d)
    if kind == "student":
        s = _dnn(d, d.name, "student")
        s.temperature = float(record["temperature"])
        s.combination = (record.get("teacher") or {}).get("combination")
        s.loss_terms = dict(record.get("loss_terms") or {})
        return [s]
    if kind == "baseline":
        return [_dnn(d, d.name, "baseline")]
    return [_scored(System(d.name, "gmm", d))] if (d / "decode_test" / "wer.json").is_file() else []


def _guessed_systems(d: Path) -> list[System]:
    """Exp dirs written before system.json: what a dir is, from the files in it."""
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
    s.loss_terms = dict(record["loss"].get("terms") or {})
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
        if "unmapped" in w:  # decoded with --score-map (TIMIT: wer = 39-phone PER, unmapped = 48-phone)
            s.values["test_wer_unmapped"] = w["unmapped"]["wer"]
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

    from asr_kd.nnet.models import load_torch

    blob = load_torch(final_pt, "model", map_location="cpu", weights_only=False)
    state = blob.get("state_dict", blob)
    return int(sum(v.numel() for k, v in state.items()
                   if torch.is_tensor(v) and not k.endswith(("running_mean", "running_var", "num_batches_tracked",
                                                              "mean", "inv_std"))))


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    for lineno, line in read_lines(path):
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
    ("test WER % before --score-map", "test_wer_unmapped", lambda v: f"{v:.2f}"),  # only when decoded with one
    ("S/D/I", None, None),
    ("ac. scale", "acoustic_scale", lambda v: f"{v:.3g}"),
    ("word pen.", "word_penalty", lambda v: f"{v:.2g}"),
    ("RTF", "rtf", lambda v: f"{v:.4f}"),
]
FORMAT = {metric: fmt for _, metric, fmt in COLUMNS if metric}


@dataclass
class Report:
    """Everything a section may show: the runs, their per-system summary, the findings, the plots."""

    runs: list[Run]
    rows: list[dict]
    findings: Findings
    corpus: str | None
    images: list[str] = field(default_factory=list)

    def row(self, name: str) -> dict | None:
        return next((r for r in self.rows if r["name"] == name), None)

    def system(self, name: str) -> System | None:
        return next((s for run in self.runs for s in run.systems if s.name == name), None)


def cell(row: dict, metric: str, fmt) -> str:
    if metric not in row:
        return ""
    mean, std = row[metric]
    return fmt(mean) if std is None else f"{fmt(mean)} ± {fmt(std)}"


def _table(header: list[str], lines: list[list[str]]) -> str:
    return ("| " + " | ".join(header) + " |\n" + "|---" * len(header) + "|\n"
            + "".join("| " + " | ".join(cells) + " |\n" for cells in lines))


def main_table(rows: list[dict]) -> str:
    """All systems; a column no system has a number for (e.g. no --score-map decode) is left out."""
    columns = [c for c in COLUMNS if c[1] != "test_wer_unmapped" or any(c[1] in r for r in rows)]
    lines = []
    for row in rows:
        cells = []
        for _, metric, fmt in columns:
            if metric is None:
                sdi = [row.get(k) for k in ("substitutions", "deletions", "insertions")]
                cells.append("/".join(f"{round(m[0], 1):g}" for m in sdi) if all(sdi) else "")  # means over runs
            else:
                cells.append(cell(row, metric, fmt))
        name = row["name"] + (f" (n={row['n']})" if row["n"] > 1 and row["kind"] != "members" else "")
        lines.append([name] + cells)
    return _table(["system"] + [h for h, _, _ in columns], lines)


def _wer_cell(rep: Report, name: str) -> str:
    row = rep.row(name) or {}
    text = cell(row, "test_wer", FORMAT["test_wer"])
    interval = rep.findings.wer_intervals.get(name)
    return text + (f" [{interval[1]:.2f}, {interval[2]:.2f}]" if text and interval else "")


def _gain_cell(rep: Report, name: str) -> str:
    gain = rep.findings.gains.get(name)
    return gain.describe() if gain else ""


# ------------------------------------------------------------------ sections (each: Report -> markdown)
def intro_section(rep: Report) -> str:
    runs = rep.runs
    seeds = (f"{len(runs)} runs (seeds); cells are mean ± sample std over them" if len(runs) > 1
             else "one run; the members row gives the seed-to-seed spread of one model")
    return "\n".join([
        "# Results\n",
        "Generated by `asr-kd report` from " + ", ".join(f"`{r.exp_dir}`" for r in runs) + f" ({seeds}).\n",
        "Frame accuracy and CE (nats/frame) are against the forced alignments the DNNs were trained on; WER on "
        "test is decoded with the acoustic scale and word penalty that were best on dev (dev WER column = dev at "
        "that setting); [a, b] after a WER is its 95% bootstrap interval over test utterances. RTF counts the "
        "decoder only.\n"])


def headline_section(rep: Report) -> str:
    """Baseline, teacher ensemble and the student chosen on dev, with gain kept and WER intervals."""
    f = rep.findings
    if f.chosen is None:
        return ""
    chosen = rep.system(f.chosen)
    names = [s.name for s in rep.runs[0].systems if s.kind == "gmm"]
    names += [s.name for s in rep.runs[0].systems if s.kind == "baseline"]
    teacher = next((s.name for run in rep.runs for s in run.systems
                    if s.kind == "ensemble" and s.combination == (chosen.combination or "arith")), None)
    names += [teacher, f.chosen] if teacher else [f.chosen]
    lines = []
    for name in names:
        row = rep.row(name) or {}
        what = {"student": f"distilled ({chosen.setting}, teacher {chosen.combination or 'arith'})",
                "ensemble": "teacher"}.get(row.get("kind"), row.get("kind", ""))
        lines.append([name, what, cell(row, "params", FORMAT["params"]),
                      cell(row, "test_frame_acc", FORMAT["test_frame_acc"]), _wer_cell(rep, name),
                      _gain_cell(rep, name) if name == f.chosen else ""])
    return "\n".join([
        "## Headline (every choice made on dev)\n",
        f"Distilled student: **{f.chosen}** ({chosen.setting}), chosen on {f.chosen_by}. "
        "Dev frame accuracy rather than dev WER: it is what distillation optimises and what gain kept measures, "
        "counted over every dev frame, while dev WER moves in steps of one word error.\n",
        f"Gain kept = (student − baseline) / (ensemble − baseline) on test frame accuracy, against the ensemble "
        f"combined as the student's teacher was; shown only where the ensemble beats the baseline by more than "
        f"the seed spread ({100 * f.spread:.2f} points: {f.spread_from}); over runs the ratio of the mean gains "
        f"[95% bootstrap over runs] (per-run values).\n",
        _table(["system", "what", "params", "test frame acc %", "test WER %", "gain kept %"], lines)])


def significance_section(rep: Report) -> str:
    rows = rep.findings.significance
    if not rows:
        return ""
    lines = [[f"{rep.findings.chosen} vs {r['other']}", r["runs"], *describe(r["result"]).split(" | ")] for r in rows]
    return "\n".join([
        "## Is the student's WER really different? (paired bootstrap, Bisani & Ney 2004)\n",
        f"Test utterances resampled with replacement ({rows[0]['result'].resamples} times, the same draw for both "
        "systems); difference = WER(other) − WER(student), > 0 = the student is better; P = share of resamples "
        "in which the student has fewer errors.\n",
        _table(["comparison", "runs", "test WER % other → student", "difference [95%]", "P(student better)"], lines)])


def systems_section(rep: Report) -> str:
    return "## All systems\n\n" + main_table(rep.rows)


def sweep_section(rep: Report) -> str:
    """Every student (T, loss weights, teacher): the sweep the headline was chosen from."""
    students = [r for r in rep.rows if r["kind"] == "student"]
    if not students:
        return ""
    students.sort(key=lambda r: (rep.system(r["name"]).temperature, r["name"]))
    lines = []
    for r in students:
        s = rep.system(r["name"])
        mark = " (chosen)" if r["name"] == rep.findings.chosen else ""
        lines.append([r["name"] + mark, f"{s.temperature:g}", s.setting.partition(", ")[2], s.combination or "",
                      *(cell(r, m, FORMAT[m]) for m in ("dev_frame_acc", "test_frame_acc")),
                      _wer_cell(rep, r["name"]), _gain_cell(rep, r["name"])])
    return "\n".join(["## Temperature / loss-weight sweep (distilled students)\n",
                      "The headline student is the row with the best dev frame accuracy; test columns are shown, "
                      "never used to choose.\n",
                      _table(["student", "T", "loss weights", "teacher", "dev frame acc %", "test frame acc %",
                              "test WER %", "gain kept %"], lines)])


def regularizer_section(rep: Report) -> str:
    parts = []
    for run in rep.runs:
        if run.regularizer:
            parts.append(f"{run.regularizer['title']} ({run.exp_dir})\n\n" + _table(
                ["system", "train frame acc %", "dev frame acc %", "test frame acc %"],
                [[r["system"], *(f"{100 * r[k]:.2f}" if k in r else "" for k in
                                 ("train_frame_acc", "dev_frame_acc", "test_frame_acc"))]
                 for r in run.regularizer["rows"]]))
    return "## Soft targets as a regularizer (paper §6)\n\n" + "\n".join(parts) if parts else ""


def references_section(rep: Report) -> str:
    refs = CORPUS_REFERENCES.get(rep.corpus or "", []) + REFERENCES
    note = "" if rep.corpus else " (corpus unknown: pass `--corpus` to list the references for it)"
    return (f"## External references (quoted, not measured here){note}\n\n"
            + _table(["reference", "measure", "value"], [list(r) for r in refs]))


def plots_section(rep: Report) -> str:
    return "## Plots\n\n" + "".join(f"![{Path(i).stem}]({i})\n" for i in rep.images) if rep.images else ""


def timing_section(rep: Report) -> str:
    lines = []
    for run in rep.runs:
        if run.step_seconds:
            total = sum(run.step_seconds.values())
            steps = ", ".join(f"{k} {v}" for k, v in run.step_seconds.items())
            lines.append(f"- `{run.exp_dir}`: {total} s over {len(run.step_seconds)} steps ({steps})\n")
    return "## Step durations (s, from exp/.done markers)\n\n" + "".join(lines) if lines else ""


def specialists_section(rep: Report) -> str:
    table = specialist_section([r.exp_dir for r in rep.runs])
    return ("## Specialist models (paper §5; frame accuracy by # specialists covering the correct pdf)\n\n"
            + table) if table else ""


SECTIONS = [intro_section, headline_section, significance_section, systems_section, sweep_section,
            regularizer_section, specialists_section, references_section, plots_section, timing_section]


# ------------------------------------------------------------------ the report
def corpus_of(exp_dirs: list[str | os.PathLike]) -> str | None:
    """The corpus a recipe exp dir belongs to: recipes/<corpus>/exp... -> <corpus>, else None."""
    for d in exp_dirs:
        parts = Path(d).resolve().parts
        if "recipes" in parts[:-1]:
            return parts[parts.index("recipes") + 1]
    return None


def write_report(exp_dirs: list[str | os.PathLike], out_dir: str | os.PathLike, plots: bool = True,
                 corpus: str | None = None) -> Path:
    """RESULTS.md + results.json (+ PNG plots) in out_dir from the exp dirs (several = seeds).
    `corpus` picks the external references (default: from the path, recipes/<corpus>/exp)."""
    from asr_kd.io import write_json, write_text

    runs = [collect_run(d) for d in exp_dirs]
    rep = Report(runs, summarise(runs), find(runs), corpus or corpus_of(exp_dirs))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if plots:
        from asr_kd.report.plots import PLOTS

        rep.images = [p.name for plot in PLOTS if (p := plot(rep, out))]
    from asr_kd.report.deploy import deploy_sections

    deploy_parts, deploy_images = deploy_sections(runs, out, plots)
    rep.images += deploy_images
    write_json(out / "results.json", results_json(rep))
    write_text(out / "RESULTS.md", "\n".join(part for section in SECTIONS if (part := section(rep)))
               + "\n".join(["", *deploy_parts]))
    log.info("wrote %s", out / "RESULTS.md")
    return out / "RESULTS.md"


def results_json(rep: Report) -> dict:
    runs, f = rep.runs, rep.findings
    return {
        "exp_dirs": [str(r.exp_dir) for r in runs],
        "corpus": rep.corpus,
        "specialists": {str(f): record for f, record in specialist_tables([r.exp_dir for r in runs])},
        "summary": [{k: ({"mean": v[0], "std": v[1]} if isinstance(v, tuple) else v) for k, v in r.items()}
                    for r in rep.rows],
        "headline": {"student": f.chosen, "chosen_by": f.chosen_by, "seed_spread": f.spread,
                     "seed_spread_from": f.spread_from},
        "gain_kept": {name: dataclasses.asdict(g) for name, g in f.gains.items()},
        "significance": [{**{k: v for k, v in r.items() if k != "result"}, **r["result"].as_dict()}
                         for r in f.significance],
        "wer_intervals": {name: list(v) for name, v in f.wer_intervals.items()},
        "runs": [{"exp_dir": str(r.exp_dir), "step_seconds": r.step_seconds, "regularizer": r.regularizer,
                  "systems": [{"name": s.name, "kind": s.kind, "path": str(s.path), "temperature": s.temperature,
                               "combination": s.combination, "loss_terms": s.loss_terms, **s.values}
                              for s in r.systems]} for r in runs],
    }
