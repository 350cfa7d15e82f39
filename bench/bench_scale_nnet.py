"""Peak RSS, frames/s and disk bytes per step of the neural stages as the set grows, as ONE JSON.

    python bench/bench_scale_nnet.py [--frames 2000000 8000000 32000000] [--work /tmp/asr_kd_scale]
                                     [--budget 1048576] [--train-steps 60] [--distill-steps 120]
                                     [--batch-size 1024] [--cache-frames 131072] [--threads 2] [--rounds 2]

For each F in --frames, writes (once; reused when present under --work) a synthetic set like a
real one: an fp16 feature store of F frames x 40 dims in utterances of 200-1200 frames, an int32
alignment store with num_pdfs = 2,000 and priors.npy (what the trainer reads), plus a 50k-frame
dev set. Then, for each F, in a FRESH process (so its peak RSS is that run's own), three phases
through the project's real entry points, with `data.max_resident_frames = --budget` for every F
(so every F streams):

  train    `train_ensemble`: a stacked K=4 ensemble, one epoch capped at --train-steps steps
           (`TrainConfig.max_steps_per_epoch`), on the streamed F-frame set;
  cache    `write_cache`: a top-k (k=20) teacher cache of that ensemble at T=2;
  distill  `distill`: a student trained --distill-steps steps from the cached teacher.

The cache is the expensive part on a CPU (K forwards x 2,000 outputs + top-k per frame: the whole
32M set would take hours on 2 cores), so it covers a FIXED subset of about --cache-frames frames
for every F: whole utterances spread evenly over the set (every n-th), written as their own
feature store next to the set; the student distils over those utterances, selected from the
streamed F-frame set (`StreamedFrames.select`), so it streams as well. The JSON says so
(`cache_subset_frames`). The networks are small (2 x 128, 11-frame window) on purpose: this
measures the data path, not matmuls.

Reported per F and phase: peak RSS (VmHWM, reset between phases through /proc/self/clear_refs)
in MB and in MB above the interpreter+torch+asr_kd baseline; frames/s (train and distill: the
trainer's own `frames_per_s` in metrics.jsonl, frames actually trained x members / epoch time;
cache: cached frames / wall time); bytes read and written per step from /proc/self/io (read_bytes
/ write_bytes = the block device, rchar / wchar = all read()/write() calls, page cache included);
and wall seconds. With --rounds R every F runs R times, the rounds interleaved (2M, 8M, 32M,
2M, ...) so that other jobs on a shared machine slow every F alike; the summary takes per F the
highest frames/s over the rounds (best-of-R, as timeit does: contention only ever slows a run)
and the highest peak RSS. A phase's bytes include its set-sized passes (feature statistics and the NaN
check read the whole store once), which is why they grow with F. Ratios largest F / smallest F,
the two goals (peak RSS <= 1.5x, frames/s within 20%) and the load average at each measurement
(the machine may be shared) close the document.

Extends the former bench_stream_rss.py (synthetic stores + VmHWM in a fresh process).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DIM, PDFS, K, TOP_K, TEMPERATURE = 40, 2000, 4, 20, 2.0
PHASES = ("train", "cache", "distill")
RSS_GOAL, FPS_GOAL = 1.5, 0.2


# ---------------------------------------------------------------- synthetic stores ----------
def write_synthetic(root: Path, frames: int, dim: int = DIM, pdfs: int = PDFS, seed: int = 0) -> Path:
    """root/feats (fp16) and root/ali (int32, num_pdfs, priors.npy) with `frames` rows; reused when there."""
    from asr_kd.data.store import RaggedStoreWriter
    from asr_kd.io import atomic_path

    if (root / "ali" / "priors.npy").is_file():
        return root
    for sub in ("feats", "ali"):
        shutil.rmtree(root / sub, ignore_errors=True)  # a half-written set from a killed run
    rng = np.random.default_rng(seed)
    counts = np.zeros(pdfs, dtype=np.int64)
    with RaggedStoreWriter(root / "feats", "float16") as feats, RaggedStoreWriter(root / "ali", "int32") as ali:
        done, u = 0, 0
        while done < frames:
            n = min(int(rng.integers(200, 1201)), frames - done)
            labels = rng.integers(0, pdfs, size=n).astype(np.int32)
            feats.add(f"utt{u:08d}", rng.standard_normal((n, dim), dtype=np.float32) + labels[:, None] % 7)
            ali.add(f"utt{u:08d}", labels)
            counts += np.bincount(labels, minlength=pdfs)
            done, u = done + n, u + 1
        feats.close({"dim": dim, "config_hash": "synthetic"})
        ali.close({"num_pdfs": pdfs})
    with atomic_path(root / "ali" / "priors.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, counts / counts.sum())
    return root


def spread_utts(lengths: np.ndarray, target_frames: int) -> np.ndarray:
    """Every n-th utterance, n chosen so that they hold about `target_frames` frames (all if fewer)."""
    stride = max(1, int(lengths.sum() // max(target_frames, 1)))
    return np.arange(0, len(lengths), stride)


def write_subset(root: Path, target_frames: int) -> Path:
    """The spread subset's features as their own store (what the cache reads); reused when there."""
    from asr_kd.data.store import RaggedStore, RaggedStoreWriter

    out = root / f"subset_{target_frames}"
    if (out / "meta.json").is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    feats = RaggedStore(root / "feats")
    with RaggedStoreWriter(out, "float16") as w:
        for u in spread_utts(feats.lengths(), target_frames):
            w.add(feats.keys[u], feats.data[feats.offsets[u]:feats.offsets[u + 1]])
        w.close({"dim": feats.meta.get("dim", DIM), "config_hash": "synthetic"})
    return out


# ---------------------------------------------------------------- process probes ------------
def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the next peak is one phase's own."""
    Path("/proc/self/clear_refs").write_text("5")


def proc_io() -> dict[str, int]:
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return {k: int(fields[k]) for k in ("rchar", "wchar", "read_bytes", "write_bytes")}


class Phase:
    """Peak RSS, I/O and wall time of one phase of the child process."""

    def __init__(self, base_mb: float):
        self.base_mb = base_mb

    def __enter__(self):
        reset_peak()
        self.io0, self.t0 = proc_io(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall_s = time.perf_counter() - self.t0
        io1 = proc_io()
        self.io = {k: io1[k] - self.io0[k] for k in io1}
        self.peak_mb = vm_hwm_mb()
        return False

    def record(self, steps: int, frames_per_s: float, **extra) -> dict:
        return {"peak_rss_mb": round(self.peak_mb, 1), "peak_mb_above_baseline": round(self.peak_mb - self.base_mb, 1),
                "frames_per_s": round(frames_per_s, 1), "steps": steps, "wall_s": round(self.wall_s, 2),
                **{f"{k}_per_step": round(v / max(steps, 1)) for k, v in self.io.items()},
                "loadavg_1m_after": round(os.getloadavg()[0], 2), **extra}


# ---------------------------------------------------------------- the measured run ----------
def measure(root: Path, dev_root: Path, subset: Path, args: dict) -> dict:
    """Runs in a fresh process: the three phases on the F-frame set at `root`."""
    import torch

    from asr_kd.data.store import RaggedStore
    from asr_kd.distill.cache import CachedTeacher, write_cache
    from asr_kd.distill.distill import distill
    from asr_kd.distill.losses import LossConfig
    from asr_kd.distill.teachers import OnlineTeacher
    from asr_kd.nnet.ensemble import train_ensemble
    from asr_kd.nnet.stream import open_frames
    from asr_kd.nnet.train import TrainConfig, read_metrics

    torch.set_num_threads(args["threads"])
    base = vm_hwm_mb()
    exp = root / "exp"
    shutil.rmtree(exp, ignore_errors=True)
    cfg = TrainConfig(max_epochs=1, batch_size=args["batch_size"], lr=0.05, device="cpu", left_context=5,
                      right_context=5, max_steps_per_epoch=args["train_steps"], schedule="cosine", min_epochs=1)
    cfg.model.hidden_dim, cfg.model.hidden_layers = 128, 2
    cfg.data.max_resident_frames = args["budget"]
    out: dict = {"frames": None, "baseline_mb": round(base, 1)}

    with Phase(base) as ph:
        train = open_frames(root / "feats", root / "ali", budget=args["budget"])
        dev = open_frames(dev_root / "feats", dev_root / "ali", budget=args["budget"])
        train_ensemble(cfg, K, train, dev, exp / "ens")
    fps = read_metrics(exp / "ens" / "group_0")[-1]["frames_per_s"]
    out.update(frames=train.num_frames, streamed=bool(train.streamed))
    out["train"] = ph.record(args["train_steps"], fps, members=K)

    with Phase(base) as ph:
        teacher = OnlineTeacher.load([exp / "ens"], "arith")
        source = RaggedStore(subset)
        report = write_cache(exp / "cache", teacher, source, temperature=TEMPERATURE, feature_config_hash="synthetic",
                             top_k=TOP_K, batch_frames=args["cache_batch"])
    out["cache"] = ph.record(-(-report.num_frames // args["cache_batch"]), report.num_frames / ph.wall_s,
                             cached_frames=report.num_frames, cache_bytes=report.bytes,
                             kept_mass_mean=round(report.kept_mass_mean, 4))

    student = dataclasses.replace(cfg, max_steps_per_epoch=args["distill_steps"], seed=7)
    with Phase(base) as ph:
        transfer = train.select(spread_utts(train.lengths, args["cache_frames"]), f"{train.name}[cached subset]")
        cached = CachedTeacher(exp / "cache", temperature=TEMPERATURE)
        distill(student, cached, transfer, LossConfig(temperature=TEMPERATURE), dev=dev, exp_dir=exp / "student")
    if args["distill_steps"] * args["batch_size"] > transfer.num_labelled_frames():
        sys.exit(f"--distill-steps x --batch-size exceeds the {transfer.num_frames}-frame cached subset: the "
                 "epoch would end early; lower --distill-steps or raise --cache-frames")
    fps = read_metrics(exp / "student")[-1]["frames_per_s"]
    out["distill"] = ph.record(args["distill_steps"], fps, transfer_frames=transfer.num_frames,
                               transfer_streamed=bool(transfer.streamed))
    shutil.rmtree(exp)
    return out


def run_child(root: Path, dev_root: Path, subset: Path, args: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(args["threads"]), "TQDM_DISABLE": "1"}
    proc = subprocess.run([sys.executable, __file__, "--child", str(root), str(dev_root), str(subset),
                           json.dumps(args)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench child for {root} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def per_f(runs: list[dict]) -> list[dict]:
    """Per F (ascending), per phase: the highest peak RSS and the best frames/s over its rounds."""
    out = []
    for f in sorted({r["F"] for r in runs}):
        mine = [r for r in runs if r["F"] == f]
        out.append({"F": f, **{p: {"peak_rss_mb": max(r[p]["peak_rss_mb"] for r in mine),
                                   "peak_mb_above_baseline": max(r[p]["peak_mb_above_baseline"] for r in mine),
                                   "frames_per_s_best": max(r[p]["frames_per_s"] for r in mine),
                                   "frames_per_s_all": [r[p]["frames_per_s"] for r in mine]} for p in PHASES}})
    return out


def summary(best: list[dict]) -> dict:
    """Largest-to-smallest F ratios per phase (of `per_f`) and whether the goals hold."""
    small, large = best[0], best[-1]
    out = {}
    for phase in PHASES:
        rss = large[phase]["peak_rss_mb"] / small[phase]["peak_rss_mb"]
        fps = [r[phase]["frames_per_s_best"] for r in best]
        spread = (max(fps) - min(fps)) / max(fps)
        out[phase] = {"peak_rss_ratio": round(rss, 3),
                      "peak_above_baseline_ratio": round(large[phase]["peak_mb_above_baseline"]
                                                         / max(small[phase]["peak_mb_above_baseline"], 1e-9), 3),
                      "frames_per_s_ratio": round(large[phase]["frames_per_s_best"]
                                                  / small[phase]["frames_per_s_best"], 3),
                      "frames_per_s_spread": round(spread, 3),
                      "rss_goal_met": rss <= RSS_GOAL, "fps_goal_met": spread <= FPS_GOAL}
    peak = [max(r[p]["peak_rss_mb"] for p in PHASES) for r in best]
    out["process_peak_rss_ratio"] = round(peak[-1] / peak[0], 3)
    return out


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[2_000_000, 8_000_000, 32_000_000])
    ap.add_argument("--work", default="/tmp/asr_kd_scale", help="where the synthetic sets live (reused)")
    ap.add_argument("--budget", type=int, default=1 << 20, help="data.max_resident_frames, the same for every F")
    ap.add_argument("--train-steps", type=int, default=60)
    ap.add_argument("--distill-steps", type=int, default=120)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--cache-frames", type=int, default=1 << 17, help="frames of the cached subset (every F)")
    ap.add_argument("--cache-batch", type=int, default=8192)
    ap.add_argument("--dev-frames", type=int, default=50_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="runs of every F, interleaved (best-of for frames/s)")
    return ap.parse_args()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        root, dev_root, subset = map(Path, sys.argv[2:5])
        print(json.dumps(measure(root, dev_root, subset, json.loads(sys.argv[5]))))
        return
    args = parse_args()
    frames = sorted(args.frames)
    work = Path(args.work)
    child_args = {k: getattr(args, k) for k in ("budget", "train_steps", "distill_steps", "batch_size",
                                                 "cache_frames", "cache_batch", "threads")}
    dev_root = write_synthetic(work / f"dev{args.dev_frames}", args.dev_frames, seed=1)
    sets = {f: write_synthetic(work / f"F{f}", f) for f in frames}
    subsets = {f: write_subset(sets[f], args.cache_frames) for f in frames}
    runs = []
    for rnd in range(args.rounds):
        for f in frames:
            load = [round(x, 2) for x in os.getloadavg()]
            runs.append({"F": f, "round": rnd, "loadavg_before": load,
                         **run_child(sets[f], dev_root, subsets[f], child_args)})
    best = per_f(runs)
    print(json.dumps({
        "machine": f"{platform.machine()} x{os.cpu_count()} cores, "
                   f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB",
        "shared_machine_note": "other jobs may run at the same time; see loadavg_* per run",
        "dim": DIM, "num_pdfs": PDFS, "store_dtype": "float16", "ensemble_k": K, "top_k": TOP_K,
        "temperature": TEMPERATURE, "model": "2 x 128 ReLU, 11-frame window",
        "cache_subset_frames": args.cache_frames,
        "cache_subset_note": "the cache and the distilled student cover the same fixed subset of whole utterances "
                             "spread over the set for every F (the full 32M-frame cache does not fit the CPU time)",
        "config": {**child_args, "rounds": args.rounds}, "runs": runs, "per_F": best,
        "ratios_largest_to_smallest": summary(best),
        "goals": {"peak_rss_ratio_max": RSS_GOAL, "frames_per_s_spread_max": FPS_GOAL}}, indent=1))


if __name__ == "__main__":
    main()
