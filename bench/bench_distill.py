"""Cost of a distillation training step: student only vs online teacher vs cached teacher, as JSON.

    python bench/bench_distill.py [--teacher-k 4] [--teacher-layers 4] [--student-layers 2] [--hidden 512]
                                  [--pdfs 1000] [--batch 256] [--steps 20] [--repeats 3] [--device cpu|cuda] [--threads 2]

One step = windows for a batch (one gather on the device) -> student forward -> loss -> backward
-> SGD step, exactly as the trainer runs it, with these losses:
- student_only: hard-label CE (no teacher);
- online: the K-member teacher forward (no_grad, bf16 autocast on CUDA) + soft_ce + 0.5 hard_ce;
- cached: the same loss, targets looked up in a top-k cache (`--top-k`, 0 = full) by frame index.
The teacher's cost is ~K x (teacher forward) / (student forward + backward = ~3 forwards), so the
online/student ratio predicts itself from FLOPs; the JSON reports both.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from asr_kd.distill.cache import CachedTeacher, write_cache
from asr_kd.distill.distill import make_loss_fn
from asr_kd.distill.losses import LossConfig
from asr_kd.distill.teachers import OnlineTeacher
from asr_kd.nnet.frames import FrameData
from asr_kd.nnet.models import ModelConfig, count_params, flops_per_frame
from asr_kd.nnet.train import ModelSpec, init_model, save_final


def synthetic_set(frames: int, dim: int, pdfs: int, device) -> FrameData:
    lengths = torch.full((frames // 200,), 200)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    g = torch.Generator().manual_seed(0)
    n = int(lengths.sum())
    return FrameData(torch.randn(n, dim, generator=g).to(device), offsets, [f"u{i:05d}" for i in range(len(lengths))],
                     torch.randint(0, pdfs, (n,), generator=g), pdfs)


def time_steps(model, data, spec, loss_fn, batch, steps, device) -> float:
    """Seconds per training step (after 3 warm-up steps)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator(device=data.device).manual_seed(1)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    for i in range(steps + 3):
        if i == 3:
            sync(device)
            start = time.perf_counter()
        idx = torch.randint(0, data.num_frames, (batch,), generator=gen, device=data.device)
        b = data.batch(idx, spec.left_context, spec.right_context)
        with autocast:
            logits = model(b.x).float()
        loss, _ = loss_fn(logits, b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return (time.perf_counter() - start) / steps


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher-k", type=int, default=4)
    p.add_argument("--teacher-layers", type=int, default=4)
    p.add_argument("--student-layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--pdfs", type=int, default=1000)
    p.add_argument("--feat-dim", type=int, default=40)
    p.add_argument("--context", type=int, default=5, help="left = right context")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the median is reported")
    p.add_argument("--frames", type=int, default=20000)
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = synthetic_set(args.frames, args.feat_dim, args.pdfs, device)

    def spec(layers):
        return ModelSpec(ModelConfig(hidden_layers=layers, hidden_dim=args.hidden), args.feat_dim,
                         args.context, args.context, args.pdfs)

    student_spec, teacher_spec = spec(args.student_layers), spec(args.teacher_layers)
    with tempfile.TemporaryDirectory(prefix="bench_distill.") as tmp:
        dirs = []
        for k in range(args.teacher_k):
            dirs.append(Path(tmp) / f"t{k}")
            save_final(dirs[-1] / "final.pt", init_model(teacher_spec, 100 + k).state_dict(), teacher_spec)
        teacher = OnlineTeacher.load(dirs, "arith", device).attach(data)
        loss = LossConfig(terms={"soft_ce": 1.0, "hard_ce": 0.5}, temperature=2.0)
        t0 = time.perf_counter()
        write_cache(Path(tmp) / "cache", teacher, data, temperature=2.0, feature_config_hash="bench",
                    top_k=args.top_k or None)
        cache_s = time.perf_counter() - t0
        cached = CachedTeacher(Path(tmp) / "cache", temperature=2.0, device=device).attach(data)
        variants = {"student_only": make_loss_fn(None, LossConfig(terms={"hard_ce": 1.0})),
                    "online_teacher": make_loss_fn(teacher, loss), "cached_teacher": make_loss_fn(cached, loss)}
        timings = {name: [] for name in variants}
        for _ in range(args.repeats):  # interleaved rounds, median: robust to other load on a shared machine
            for name, loss_fn in variants.items():
                model = init_model(student_spec, 1).to(device)
                timings[name].append(time_steps(model, data, student_spec, loss_fn, args.batch, args.steps, device))
        results = {name: statistics.median(t) for name, t in timings.items()}
    student, teacher_one = student_spec.build(), teacher_spec.build()
    flops_s, flops_t = flops_per_frame(student), flops_per_frame(teacher_one)
    report = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": args.threads, "python": platform.python_version(), "torch": torch.__version__,
        "batch": args.batch, "steps": args.steps, "repeats": args.repeats, "pdfs": args.pdfs, "window": 2 * args.context + 1,
        "student_params": count_params(student), "teacher_params_per_member": count_params(teacher_one),
        "teacher_k": args.teacher_k, "top_k": args.top_k,
        **{f"{k}_ms_per_step": round(1e3 * v, 3) for k, v in results.items()},
        "online_vs_student_ratio": round(results["online_teacher"] / results["student_only"], 3),
        "cached_vs_student_ratio": round(results["cached_teacher"] / results["student_only"], 3),
        "flops_predicted_online_ratio": round((3 * flops_s + args.teacher_k * flops_t) / (3 * flops_s), 3),
        "cache_write_s": round(cache_s, 3), "cache_frames": data.num_frames,
        "student_frames_per_s": round(args.batch / results["student_only"]),
        "online_frames_per_s": round(args.batch / results["online_teacher"]),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
