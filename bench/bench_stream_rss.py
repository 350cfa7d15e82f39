"""Peak resident memory of loading a set + one training epoch, resident vs streamed, as JSON.

    python bench/bench_stream_rss.py [--frames 1000000 8000000] [--budget 524288] [--dim 40] [--pdfs 2000]
                                     [--work /tmp/rss] [--threads 2]

For each F in --frames, writes a synthetic fp16 feature store (F x dim, utterances of 200-1200
frames) and an int32 alignment store, then measures in a FRESH process (so the peak is that
run's): the VmHWM after opening the set (`stream.open_frames`) and after one epoch of a small DNN
(`train_frame_classifier`), with `data.max_resident_frames = --budget` (streamed once F exceeds it)
and, for comparison, with the whole set resident (budget = F). The model is deliberately small:
this measures the data path, not the network. Reported: MB above the interpreter+torch baseline,
train frames/s, and the ratio of the largest to the smallest F.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_synthetic(root: Path, frames: int, dim: int, pdfs: int, seed: int = 0) -> Path:
    """root/feats (fp16) and root/ali (int32) with `frames` rows; reused when already there."""
    from asr_kd.data.store import RaggedStoreWriter

    if (root / "ali" / "meta.json").is_file():
        return root
    rng = np.random.default_rng(seed)
    with RaggedStoreWriter(root / "feats", "float16") as feats, RaggedStoreWriter(root / "ali", "int32") as ali:
        done, u = 0, 0
        while done < frames:
            n = min(int(rng.integers(200, 1201)), frames - done)
            labels = rng.integers(0, pdfs, size=n).astype(np.int32)
            feats.add(f"utt{u:08d}", rng.standard_normal((n, dim), dtype=np.float32) + labels[:, None] % 7)
            ali.add(f"utt{u:08d}", labels)
            done, u = done + n, u + 1
        feats.close({"dim": dim})
        ali.close({"num_pdfs": pdfs})
    return root


def measure(root: Path, dev_root: Path, budget: int, threads: int) -> dict:
    """Runs in a fresh process: open + one epoch, peak RSS at each point."""
    import torch

    from asr_kd.nnet.stream import open_frames
    from asr_kd.nnet.train import TrainConfig, train_frame_classifier

    torch.set_num_threads(threads)
    base = vm_hwm_mb()
    t0 = time.perf_counter()
    train = open_frames(root / "feats", root / "ali", budget=budget)
    dev = open_frames(dev_root / "feats", dev_root / "ali", budget=budget)
    load_s, after_load = time.perf_counter() - t0, vm_hwm_mb()
    cfg = TrainConfig(max_epochs=1, batch_size=4096, lr=0.05, device="cpu", left_context=2, right_context=2)
    cfg.model.hidden_dim, cfg.model.hidden_layers = 64, 1
    cfg.data.max_resident_frames = budget
    exp = root / f"exp_{budget}"
    if exp.exists():
        import shutil

        shutil.rmtree(exp)
    t0 = time.perf_counter()
    train_frame_classifier(cfg, train, dev, exp_dir=exp)
    epoch_s = time.perf_counter() - t0
    return {"streamed": bool(train.streamed), "budget_frames": budget, "frames": train.num_frames,
            "baseline_mb": round(base, 1), "load_peak_mb_above_baseline": round(after_load - base, 1),
            "epoch_peak_mb_above_baseline": round(vm_hwm_mb() - base, 1), "load_s": round(load_s, 2),
            "epoch_s": round(epoch_s, 2), "train_frames_per_s": round(train.num_frames / epoch_s, 1)}


def run_child(root: Path, dev_root: Path, budget: int, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, __file__, "--child", str(root), str(dev_root), str(budget), str(threads)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        root, dev_root, budget, threads = Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
        print(json.dumps(measure(root, dev_root, budget, threads)))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[1_000_000, 8_000_000])
    ap.add_argument("--budget", type=int, default=1 << 19)
    ap.add_argument("--dim", type=int, default=40)
    ap.add_argument("--pdfs", type=int, default=2000)
    ap.add_argument("--work", default="/tmp/asr_kd_rss")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-resident", action="store_true", help="skip the whole-set-resident comparison runs")
    args = ap.parse_args()
    work = Path(args.work)
    dev_root = write_synthetic(work / "dev", 50_000, args.dim, args.pdfs, seed=1)
    rows = []
    for frames in args.frames:
        root = write_synthetic(work / f"F{frames}", frames, args.dim, args.pdfs)
        rows.append({"mode": "streamed", **run_child(root, dev_root, args.budget, args.threads)})
        if not args.no_resident:
            rows.append({"mode": "resident", **run_child(root, dev_root, frames, args.threads)})
    streamed = [r for r in rows if r["mode"] == "streamed"]
    ratio = streamed[-1]["epoch_peak_mb_above_baseline"] / max(streamed[0]["epoch_peak_mb_above_baseline"], 1e-9)
    print(json.dumps({"machine": f"{platform.machine()} x{os.cpu_count()} cores", "dim": args.dim,
                      "store_dtype": "float16", "runs": rows,
                      "streamed_peak_ratio_largest_to_smallest": round(ratio, 3)}, indent=1))


if __name__ == "__main__":
    main()
