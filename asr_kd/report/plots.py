"""PNG plots for the report (matplotlib, Agg backend: no display needed), each readable at a glance:
one line (mean) and one band per system kind over seeds, one legend entry per thing drawn.

`PLOTS` lists them (each: Report, out dir -> PNG path or None when it has nothing to draw).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def dev_curves(rep, out: Path) -> Path | None:
    """Dev frame accuracy per epoch: mean over seeds ± std band, one line per system kind (the
    baseline, the ensemble members, each distilled setting)."""
    groups: dict[str, list[list[tuple[int, float]]]] = {}
    for run in rep.runs:
        for s in run.systems:
            label = {"baseline": "baseline DNN", "member": "ensemble members"}.get(s.kind, s.name)
            if s.kind == "student":
                label = f"student {s.setting}"
            for records in s.curves.values():
                for series in _series(records):
                    groups.setdefault(label, []).append(series)
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for color, (label, curves) in zip(_colors(), groups.items()):
        epochs = sorted({e for c in curves for e, _ in c})
        at = [[v for c in curves for e2, v in c if e2 == e] for e in epochs]
        mean = np.array([np.mean(v) for v in at])
        std = np.array([np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in at])
        ax.plot(epochs, 100 * mean, marker="o", ms=3, color=color, label=f"{label} (n={len(curves)})")
        if len(curves) > 1:
            ax.fill_between(epochs, 100 * (mean - std), 100 * (mean + std), color=color, alpha=0.2, lw=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel("dev frame accuracy %")
    ax.set_title("dev frame accuracy: mean ± std over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out / "dev_curves.png")


def _series(records: list[dict]) -> list[list[tuple[int, float]]]:
    """(epoch, dev acc) series of a metrics.jsonl: one, or one per member of a stacked group."""
    rows = [(r["epoch"], r["dev_frame_acc"]) for r in records if "dev_frame_acc" in r]
    if rows and isinstance(rows[0][1], list):
        return [[(e, a[m]) for e, a in rows] for m in range(len(rows[0][1]))]
    return [rows] if rows else []


def temperature_sweep(rep, out: Path) -> Path | None:
    """Students' test frame accuracy against T (mean ± std over seeds, one series per loss-weight
    setting), with the baseline and the teacher ensemble as mean ± std bands; the dev-chosen one marked."""
    students = [r for r in rep.rows if r["kind"] == "student" and "test_frame_acc" in r]
    if not students:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    series: dict[str, list[tuple[float, tuple]]] = {}
    for r in students:
        s = rep.system(r["name"])
        series.setdefault(f"student ({s.setting.partition(', ')[2] or 'soft only'}, {s.combination or 'arith'})",
                          []).append((s.temperature, r["test_frame_acc"], r["name"]))
    colors = _colors()
    for label, points in series.items():
        points.sort()
        t = [p[0] for p in points]
        mean = [100 * p[1][0] for p in points]
        std = [100 * (p[1][1] or 0.0) for p in points]
        ax.errorbar(t, mean, yerr=std, marker="o", capsize=3, color=next(colors), label=label)
        for tt, m, p in zip(t, mean, points):
            if p[2] == rep.findings.chosen:
                ax.plot([tt], [m], "*", ms=14, color="k", label="chosen on dev")
    for kind, label in (("baseline", "baseline DNN"), ("ensemble", "teacher ensemble")):
        row = _band_row(rep, kind)
        if row is not None:
            mean, std = (100 * v if v is not None else 0.0 for v in row["test_frame_acc"])
            color = next(colors)
            ax.axhline(mean, color=color, ls="--", label=f"{label} ({row['name']})")
            if std:
                ax.axhspan(mean - std, mean + std, color=color, alpha=0.15)
    temperatures = sorted({p[0] for points in series.values() for p in points})
    ax.set_xscale("log")
    ax.set_xticks(temperatures, [f"{t:g}" for t in temperatures])
    ax.minorticks_off()
    ax.set_xlabel("temperature T")
    ax.set_ylabel("test frame accuracy %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out / "temperature_sweep.png")


def _band_row(rep, kind: str) -> dict | None:
    """The baseline row, or the ensemble row the chosen student was taught by."""
    chosen = rep.system(rep.findings.chosen) if rep.findings.chosen else None
    for r in rep.rows:
        if r["kind"] == kind and "test_frame_acc" in r:
            s = rep.system(r["name"])
            if kind != "ensemble" or chosen is None or s.combination == (chosen.combination or "arith"):
                return r
    return None


def wer_per_system(rep, out: Path) -> Path | None:
    """Test WER of every decoded system with its 95% bootstrap interval over test utterances."""
    names = [r["name"] for r in rep.rows if r["name"] in rep.findings.wer_intervals]
    if not names:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.2))
    for y, name in enumerate(names):
        wer, lo, hi = rep.findings.wer_intervals[name]
        color = "C3" if name == rep.findings.chosen else "C0"
        ax.errorbar([wer], [y], xerr=[[wer - lo], [hi - wer]], fmt="o", capsize=3, color=color)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("test WER % (95% bootstrap interval over utterances)")
    ax.set_title("test WER per system (red: the student chosen on dev)", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, out / "wer_per_system.png")


PLOTS = [dev_curves, temperature_sweep, wer_per_system]


def _colors():
    return iter(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4)


def _save(fig, path: Path) -> Path:
    from asr_kd.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path
