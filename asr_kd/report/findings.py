"""What the report concludes from the runs, each decision made on dev or stated with its uncertainty:
which student is the headline (best dev frame accuracy), how much of the ensemble's gain it keeps
(distill/gain.py, against the seed spread), whether its test WER beats the baseline's and the
ensemble's (paired bootstrap, decode/significance.py), and each system's WER interval.

Several runs are seeds of one recipe: a system is matched across runs by name; per-utterance errors
of one system are averaged over the runs before bootstrapping (the test utterances are the same).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from asr_kd.decode.significance import PairedBootstrap, UttErrors, paired_bootstrap, utt_errors, wer_interval
from asr_kd.distill.gain import GainOverSeeds, gain_kept_over_seeds

GAIN_METRIC = "test_frame_acc"  # the paper's Table 1 measure


@dataclass
class Findings:
    chosen: str | None = None  # headline student's name (best mean dev frame accuracy)
    chosen_by: str = ""  # the metric and values it was chosen on, in words
    spread: float = 0.0  # seed spread of one model on GAIN_METRIC
    spread_from: str = ""  # where the spread comes from, in words
    gains: dict[str, GainOverSeeds] = field(default_factory=dict)  # student name -> gain kept
    significance: list[dict] = field(default_factory=list)  # rows: comparison, runs, PairedBootstrap
    wer_intervals: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # name -> (WER, 95% lo, hi)


def find(runs) -> Findings:
    f = Findings()
    f.chosen, f.chosen_by = choose_student(runs)
    f.spread, f.spread_from = seed_spread(runs)
    for name in _names(runs, "student"):
        gain = student_gain(runs, name, f.spread)
        if gain is not None:
            f.gains[name] = gain
    if f.chosen:
        f.significance = significance(runs, f.chosen)
    f.wer_intervals = wer_intervals(runs)
    return f


def _names(runs, kind: str) -> list[str]:
    return list(dict.fromkeys(s.name for run in runs for s in run.systems if s.kind == kind))


def _system(run, name: str):
    return next((s for s in run.systems if s.name == name), None)


def choose_student(runs) -> tuple[str | None, str]:
    """The student (any T, loss weights, teacher) with the best dev frame accuracy, mean over runs."""
    scores = {}
    for name in _names(runs, "student"):
        values = [s.values["dev_frame_acc"] for run in runs if (s := _system(run, name)) and "dev_frame_acc" in s.values]
        if values:
            scores[name] = sum(values) / len(values)
    if not scores:
        return None, "no student has a dev frame accuracy (eval_dev.json)"
    best = max(scores, key=scores.get)
    listed = ", ".join(f"{n} {100 * v:.2f}%" for n, v in sorted(scores.items(), key=lambda kv: -kv[1]))
    return best, f"best dev frame accuracy{' (mean over runs)' if len(runs) > 1 else ''}: {listed}"


def seed_spread(runs) -> tuple[float, str]:
    """Std of one model's GAIN_METRIC from its seed alone: the baseline over runs, else the members of one run."""
    baselines = [s.values[GAIN_METRIC] for run in runs for s in run.systems
                 if s.kind == "baseline" and GAIN_METRIC in s.values]
    if len(runs) > 1 and len(baselines) > 1:
        return float(np.std(baselines, ddof=1)), f"std of the baseline over {len(baselines)} runs"
    members = [s.values[GAIN_METRIC] for s in runs[0].systems if s.kind == "member" and GAIN_METRIC in s.values]
    if len(members) > 1:
        return float(np.std(members, ddof=1)), f"std of the {len(members)} ensemble members (seeds of one recipe)"
    return 0.0, "unknown (one run, fewer than two members): any ensemble gain counts"


def teacher_of(run, student):
    """The ensemble row combined as the student's teacher was (a geo cache -> the geo row)."""
    ensembles = [s for s in run.systems if s.kind == "ensemble"]
    return next((e for e in ensembles if e.combination == (student.combination or "arith")),
                ensembles[0] if ensembles else None)


def baseline_of(run):
    baselines = [s for s in run.systems if s.kind == "baseline"]
    return baselines[0] if len(baselines) == 1 else None


def student_gain(runs, name: str, spread: float) -> GainOverSeeds | None:
    """Gain kept on GAIN_METRIC over the runs that have the student, its baseline and its teacher."""
    triples = []
    for run in runs:
        s = _system(run, name)
        base, ens = baseline_of(run), teacher_of(run, s) if s else None
        if s and base and ens and all(GAIN_METRIC in x.values for x in (s, base, ens)):
            triples.append((s.values[GAIN_METRIC], base.values[GAIN_METRIC], ens.values[GAIN_METRIC]))
    if not triples:
        return None
    students, baselines, ensembles = map(list, zip(*triples))
    return gain_kept_over_seeds(students, baselines, ensembles, spread)


def _decoded(system) -> UttErrors | None:
    d = system.path / "decode_test"
    return utt_errors(d) if (d / "ref.txt").is_file() and (d / "hyp.txt").is_file() else None


def mean_errors(decodes: list[UttErrors]) -> UttErrors:
    """Per-utterance errors averaged over runs (seeds) of one system on the same test set."""
    first = decodes[0]
    return UttErrors(first.utt_ids, np.mean([d.errors for d in decodes], axis=0), first.words)


def significance(runs, student_name: str) -> list[dict]:
    """Paired bootstrap of the student against the baseline and against its teacher ensemble: one row
    per run, and one on the errors averaged over runs when there are several."""
    rows = []
    for label, pick in (("baseline", lambda run, s: baseline_of(run)), ("ensemble", teacher_of)):
        pairs = []
        for run in runs:
            s = _system(run, student_name)
            other = pick(run, s) if s else None
            a, b = (_decoded(other) if other else None), (_decoded(s) if s else None)
            if a is not None and b is not None:
                pairs.append((run, other.name, a, b))
        for run, other, a, b in pairs:
            rows.append({"vs": label, "other": other, "runs": str(run.exp_dir), "result": paired_bootstrap(a, b)})
        if len(pairs) > 1:
            a, b = mean_errors([p[2] for p in pairs]), mean_errors([p[3] for p in pairs])
            rows.append({"vs": label, "other": pairs[0][1], "runs": f"{len(pairs)} runs (errors averaged)",
                         "result": paired_bootstrap(a, b)})
    return rows


def wer_intervals(runs) -> dict[str, tuple[float, float, float]]:
    """Each decoded system's test WER from its hyp/ref and its 95% bootstrap interval (errors averaged over runs)."""
    out = {}
    for name in dict.fromkeys(s.name for run in runs for s in run.systems):
        decodes = [d for run in runs if (s := _system(run, name)) and (d := _decoded(s)) is not None]
        if decodes:
            errors = mean_errors(decodes)
            out[name] = (errors.wer, *wer_interval(errors))
    return out


def describe(result: PairedBootstrap) -> str:
    lo, hi = result.interval
    return (f"{result.wer_a:.2f} → {result.wer_b:.2f} | {result.difference:+.2f} [{lo:+.2f}, {hi:+.2f}] | "
            f"{result.prob_improvement:.3f}")
