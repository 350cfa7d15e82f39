"""Report sections of deployment (issue 13), read from the files the deploy steps wrote:

- `<exp>/deploy*/eval_<backend>_test.json` (`asr-kd eval-package`): the packaged dev-chosen
  student scored per backend (fp32 PyTorch, int8, ONNX) on the same features with the same
  decode settings -> the int8 row next to fp32;
- `<exp>/deploy*/bench_infer.json` (`bench/bench_infer.py`): params and acoustic-model latency of
  the ensemble and the student backends -> a latency table and the WER-against-latency plot;
- the DNN systems' params and accuracy -> accuracy against size.
Timings stay out of results.json's `summary` (they differ between any two runs).
"""
from __future__ import annotations

from pathlib import Path

from asr_kd.io import read_json

BACKEND_NAMES = {"torch": "fp32 (PyTorch)", "int8": "int8 (PyTorch dynamic)", "onnx": "fp32 (onnxruntime)"}
BENCH_TO_BACKEND = {"student_fp32_torch": "torch", "student_int8_torch": "int8", "student_fp32_onnx": "onnx"}


def deploy_dirs(exp_dir: Path) -> list[Path]:
    return sorted(d for d in Path(exp_dir).glob("deploy*") if d.is_dir())


def package_evals(exp_dir: Path) -> list[dict]:
    """One dict per eval_<backend>_test.json, with the dir it came from."""
    return [{**read_json(f), "dir": d.name} for d in deploy_dirs(exp_dir) for f in sorted(d.glob("eval_*_test.json"))]


def deploy_table(runs) -> str:
    """fp32 / int8 / ONNX rows of each packaged student (first run; the package is one model)."""
    rows = package_evals(runs[0].exp_dir) if runs else []
    if not rows:
        return ""
    lines = ["| package | backend | params | test frame acc % | test WER % | AM ms per s of audio (wall clock, shared machine) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        wer = f"{r['wer']['wer']:.2f}" if "wer" in r else ""
        lines.append(f"| {r['dir']} | {BACKEND_NAMES.get(r['backend'], r['backend'])} | {r['params']} | "
                     f"{100 * r['frame_acc']:.2f} | {wer} | {r['am_ms_per_s']:.2f} |")
    return "\n".join(lines) + "\n"


def bench_results(runs) -> tuple[Path, dict] | None:
    for d in deploy_dirs(runs[0].exp_dir) if runs else []:
        if (d / "bench_infer.json").is_file():
            return d, read_json(d / "bench_infer.json")
    return None


def latency_points(runs, bench: dict, deploy_dir: Path) -> list[tuple[str, int, float, float | None]]:
    """(system, params, one-thread AM ms per s of audio (CPU time), test WER or None) per benchmarked system."""
    one = bench["am_ms_per_s"]["1_thread"]
    evals = {r["backend"]: r for r in package_evals(runs[0].exp_dir) if r["dir"] == deploy_dir.name}
    ensemble_wer = next((s.values.get("test_wer") for s in runs[0].systems
                         if s.kind == "ensemble" and s.combination == "arith"), None)
    points = []
    for name, ms in one.items():
        if name == "ensemble":
            params, wer = bench["params"]["ensemble"], ensemble_wer
        else:
            params = bench["params"]["student"]
            r = evals.get(BENCH_TO_BACKEND.get(name))
            wer = r["wer"]["wer"] if r and "wer" in r else None
        points.append((name, params, ms["cpu"], wer))
    return points


def latency_table(points, bench: dict) -> str:
    k = bench.get("num_members")
    lines = [f"Acoustic model only, one utterance per call, CPU time of the benchmark process (the machine may be "
             f"shared: load average {bench['machine'].get('load_avg_before')}); ensemble K = {k}.\n",
             "| benchmarked model | params | AM ms per s of audio (1 thread) | test WER % |", "|---|---|---|---|"]
    lines += [f"| {n} | {p} | {ms:.2f} | {'' if w is None else f'{w:.2f}'} |" for n, p, ms, w in points]
    goals = bench.get("goals", {})
    if goals:
        lines += ["", "| goal | value | target | met |", "|---|---|---|---|"]
        lines += [f"| {g} | {v['value']} | {v['goal']} | {'yes' if v['met'] else 'no'} |" for g, v in goals.items()]
    return "\n".join(lines) + "\n"


def size_table(runs) -> str:
    """Params against accuracy of every single DNN (baselines, hard-label twins, students)."""
    systems = [s for s in runs[0].systems if s.kind in ("baseline", "student")] if runs else []
    if len({s.values.get("params") for s in systems}) < 2:
        return ""
    systems.sort(key=lambda s: (-(s.values.get("params") or 0), s.kind, s.name))
    lines = ["| model | kind | params | epochs | dev frame acc % | test frame acc % | test WER % |",
             "|---|---|---|---|---|---|---|"]
    for s in systems:
        v = s.values
        epochs = max((len(c) for c in s.curves.values()), default="")
        cells = [f"{100 * v[k]:.2f}" if k in v else "" for k in ("dev_frame_acc", "test_frame_acc")]
        wer = f"{v['test_wer']:.2f}" if "test_wer" in v else ""
        lines.append(f"| {s.name} | {s.kind} | {v.get('params', '')} | {epochs} | {cells[0]} | {cells[1]} | {wer} |")
    return "\n".join(lines) + "\n"


def deploy_sections(runs, out: Path, plots: bool) -> tuple[list[str], list[str]]:
    """(markdown parts, image file names) of the deployment sections; empty when nothing was deployed."""
    parts, images = [], []
    size = size_table(runs)
    if size:
        parts += ["## Accuracy against size (single DNNs)\n", size]
    table = deploy_table(runs)
    if table:
        parts += ["## Deployment: the packaged dev-chosen student per backend (test)\n", table]
    found = bench_results(runs)
    if found:
        deploy_dir, bench = found
        points = latency_points(runs, bench, deploy_dir)
        parts += ["## Acoustic-model latency (bench/bench_infer.py)\n", latency_table(points, bench)]
        if plots:
            from asr_kd.report.plots import plot_wer_latency

            image = plot_wer_latency(points, out / "wer_latency.png")
            if image:
                images.append(image.name)
    return parts, images
