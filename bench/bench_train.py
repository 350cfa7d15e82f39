"""Training throughput: our device-side window pipeline vs a plain DataLoader loop, same run; prints JSON.

    python bench/bench_train.py                      # CPU: small DNN (2 x 512, 11-frame window)
    python bench/bench_train.py --paper --device cuda  # the paper's 8 x 2560, 26 frames, bf16, + MFU

Both pipelines run the same model, optimizer and loss on the same synthetic set; only the feeding
differs. "ours" keeps features (frames, dim) on the device and gathers each batch's windows by
index arithmetic; "dataloader" pre-splices every frame's window into a TensorDataset and iterates a
shuffling DataLoader (what a straightforward PyTorch script does), copying each batch to the device.
It also times K stacked members (one vmap-ed step) vs K sequential runs (K x one model's time), and
on CUDA reports MFU (training FLOPs = 3 x forward FLOPs of the linear layers, against the bf16
dense peak of the GPU: known from its name (H100 SXM / H200 989, A100 312) or given by --peak-tflops).
bench/gpu_check.py reuses these functions.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from asr_kd.nnet.ensemble import StackedLearner
from asr_kd.nnet.frames import FrameData, make_generator, shuffled
from asr_kd.nnet.models import ModelConfig, ModelSpec, count_params, flops_per_frame, init_model
from asr_kd.nnet.train import SingleLearner, TrainConfig, hard_ce, make_optimizer, member_batch, resolve_device


def synthetic(frames: int, dim: int, num_pdfs: int, device, utt_len: int = 300) -> FrameData:
    g = torch.Generator().manual_seed(0)
    lengths = torch.full((frames // utt_len,), utt_len)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    n = int(offsets[-1])
    return FrameData(torch.randn(n, dim, generator=g).to(device), offsets, [f"u{i}" for i in range(len(lengths))],
                     torch.randint(0, num_pdfs, (n,), generator=g), num_pdfs)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_step(learner, optimizer, x, y, autocast: bool) -> None:
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        logits = learner.logits(x).float()
    loss, _ = hard_ce(logits, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def time_ours(learner, cfg: TrainConfig, data: FrameData, steps: int, warmup: int, autocast: bool) -> float:
    """Member-frames per second of the device-side pipeline (K members, own orders)."""
    optimizer = make_optimizer(cfg, learner.module.parameters())
    gens = [make_generator(i, data.device) for i in range(learner.k)]
    orders = torch.stack([shuffled(data.labelled_frames(), g) for g in gens])
    for i in range(warmup + steps):
        if i == warmup:
            sync(data.device)
            t0 = time.perf_counter()
        s = (i * cfg.batch_size) % (orders.shape[1] - cfg.batch_size)
        batch = member_batch(data, orders[:, s:s + cfg.batch_size], cfg)
        train_step(learner, optimizer, batch.x, batch.y, autocast)
    sync(data.device)
    return learner.k * cfg.batch_size * steps / (time.perf_counter() - t0)


def time_dataloader(learner, cfg: TrainConfig, data: FrameData, steps: int, warmup: int, autocast: bool) -> float:
    """Frames per second of a pre-spliced TensorDataset + shuffling DataLoader loop."""
    frames = torch.arange(data.num_frames, device=data.device)
    x = torch.cat([data.windows(frames[i:i + 65536], cfg.left_context, cfg.right_context).cpu()
                   for i in range(0, len(frames), 65536)])
    loader = DataLoader(TensorDataset(x, data.labels.cpu()), batch_size=cfg.batch_size, shuffle=True,
                        drop_last=True, pin_memory=data.device.type == "cuda")
    optimizer = make_optimizer(cfg, learner.module.parameters())
    done = 0
    while done < warmup + steps:
        for xb, yb in loader:
            if done == warmup:
                sync(data.device)
                t0 = time.perf_counter()
            xb, yb = xb.to(data.device, non_blocking=True), yb.to(data.device, non_blocking=True)
            train_step(learner, optimizer, xb[None], yb[None], autocast)
            done += 1
            if done == warmup + steps:
                break
    sync(data.device)
    return cfg.batch_size * steps / (time.perf_counter() - t0)


# bf16 dense peak TFLOPS by device name (datasheets, SXM parts); None = unknown (no MFU reported).
BF16_PEAK_TFLOPS = (("H200", 989.0), ("H100", 989.0), ("A100", 312.0))


def bf16_peak_tflops(device_name: str) -> float | None:
    """The bf16 dense peak of a known GPU; H100 PCIe/NVL parts have lower clocks, so they are unknown here."""
    if "H100" in device_name and ("PCIe" in device_name or "NVL" in device_name):
        return None
    return next((peak for key, peak in BF16_PEAK_TFLOPS if key in device_name), None)


def train_flops_per_s(model: torch.nn.Module, frames_per_s: float) -> float:
    """Training FLOP/s: forward + backward = 3 x the linear layers' forward FLOPs per frame."""
    return 3 * flops_per_frame(model) * frames_per_s


def pipeline_rates(spec: ModelSpec, cfg: TrainConfig, data: FrameData, steps: int, warmup: int, repeats: int,
                   autocast: bool, loader_steps: int | None = None) -> tuple[float, float]:
    """Median frames/s of (ours, dataloader) for one model, the two alternated `repeats` times
    (the DataLoader loop timed over `loader_steps`, default `steps`: it may be far slower)."""
    runs = [(time_ours(make_learner(spec, 1, data.device), cfg, data, steps, warmup, autocast),
             time_dataloader(make_learner(spec, 1, data.device), cfg, data, loader_steps or steps, warmup, autocast))
            for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def make_learner(spec: ModelSpec, k: int, device):
    """One model (k = 1) or k stacked members (seeds 0..k-1) trained in one vmap-ed step."""
    if k == 1:
        return SingleLearner(init_model(spec, 1).to(device))
    return StackedLearner([init_model(spec, s).to(device) for s in range(k)])


def member_rate(spec: ModelSpec, cfg: TrainConfig, data: FrameData, k: int, steps: int, warmup: int,
                repeats: int, autocast: bool) -> float:
    """Median member-frames/s of k members trained together (k = 1: one model, i.e. sequential training)."""
    return statistics.median(time_ours(make_learner(spec, k, data.device), cfg, data, steps, warmup, autocast)
                             for _ in range(repeats))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--paper", action="store_true", help="8 x 2560 DNN, 10+1+15 window, 14000 pdfs, batch 1024")
    p.add_argument("--frames", type=int, default=60000)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3, help="alternate the pipelines this often; report medians")
    p.add_argument("--k", type=int, default=4, help="members for the stacked vs sequential comparison")
    p.add_argument("--peak-tflops", type=float, help="bf16 dense peak (default: known from the GPU's name)")
    args = p.parse_args()
    device = resolve_device(args.device)
    if args.paper:
        model = ModelConfig(hidden_layers=8, hidden_dim=2560)
        cfg = dict(left_context=10, right_context=15, batch_size=1024)
        num_pdfs = 14000
    else:
        model, cfg = ModelConfig(hidden_layers=2, hidden_dim=512), dict(left_context=5, right_context=5, batch_size=256)
        num_pdfs = 500
    cfg = TrainConfig(model=model, device=str(device), **cfg)
    data = synthetic(args.frames, 40, num_pdfs, device)
    spec = ModelSpec(model, 40, cfg.left_context, cfg.right_context, num_pdfs)
    autocast = device.type == "cuda"
    ours, loader = pipeline_rates(spec, cfg, data, args.steps, args.warmup, args.repeats, autocast)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}"
    flops = train_flops_per_s(init_model(spec, 1), ours)
    result = {
        "device": name,
        "model": f"{model.hidden_layers}x{model.hidden_dim}", "window": cfg.left_context + 1 + cfg.right_context,
        "num_pdfs": num_pdfs, "params": count_params(init_model(spec, 1)), "batch_size": cfg.batch_size,
        "precision": "bf16 autocast" if autocast else "fp32", "steps": args.steps, "repeats": args.repeats,
        "ours_frames_per_s": round(ours), "dataloader_frames_per_s": round(loader), "speedup": round(ours / loader, 2),
        "train_tflops_per_s": round(flops / 1e12, 3),
    }
    peak = args.peak_tflops or (bf16_peak_tflops(name) if device.type == "cuda" else None)
    if peak:
        result["mfu"] = round(flops / (peak * 1e12), 3)
    if args.k > 1:
        k_rate = member_rate(spec, cfg, data, args.k, args.steps, args.warmup, args.repeats, autocast)
        result.update({"k": args.k, "stacked_member_frames_per_s": round(k_rate),
                       "sequential_member_frames_per_s": round(ours), "stacked_vs_sequential": round(k_rate / ours, 2)})
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
