"""PNG plots for the report (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_training_curves(runs, path: Path) -> Path | None:
    """Dev frame accuracy per epoch of every trained DNN (ensemble groups: one line per member)."""
    curves = [(label, records) for run in runs for s in run.systems for label, records in s.curves.items()]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, records in curves:
        epochs = [r["epoch"] for r in records if "dev_frame_acc" in r]
        accs = [r["dev_frame_acc"] for r in records if "dev_frame_acc" in r]
        if accs and isinstance(accs[0], list):  # stacked ensemble group: one series per member
            for m in range(len(accs[0])):
                ax.plot(epochs, [100 * a[m] for a in accs], lw=1, alpha=0.6, label=f"{label} m{m}")
        elif accs:
            ax.plot(epochs, [100 * a for a in accs], marker="o", ms=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("dev frame accuracy %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_temperature_sweep(runs, path: Path) -> Path | None:
    """Students' test frame accuracy against T, with the baseline and ensembles as horizontal lines."""
    points = sorted((s.temperature, 100 * s.values["test_frame_acc"]) for run in runs for s in run.systems
                    if s.kind == "student" and "test_frame_acc" in s.values)
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([t for t, _ in points], [a for _, a in points], "o", label="distilled student")
    styles = {"baseline": ("--", "C1"), "ensemble": (":", "C2")}
    for run in runs[:1]:
        for s in run.systems:
            if s.kind in styles and "test_frame_acc" in s.values:
                ls, color = styles[s.kind]
                ax.axhline(100 * s.values["test_frame_acc"], ls=ls, color=color if s.combination != "geo" else "C3",
                           label=s.name)
    temperatures = sorted({t for t, _ in points})
    ax.set_xscale("log")
    ax.set_xticks(temperatures, [f"{t:g}" for t in temperatures])
    ax.minorticks_off()
    ax.set_xlabel("temperature T")
    ax.set_ylabel("test frame accuracy %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    from asr_kd.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def plot_wer_latency(points, path: Path) -> Path | None:
    """Test WER against acoustic-model ms per second of audio (one thread), one point per system."""
    points = [(n, p, ms, w) for n, p, ms, w in points if w is not None]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, params, ms, wer in points:
        ax.plot(ms, wer, "o")
        ax.annotate(f"{name} ({params / 1e3:.0f}k)", (ms, wer), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("acoustic model ms per s of audio (1 thread, CPU time)")
    ax.set_ylabel("test WER %")
    ax.grid(alpha=0.3)
    return _save(fig, path)
