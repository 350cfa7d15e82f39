"""The GPU check: the neural half of asr_kd measured on one device, written as ONE JSON file.

    bench/gpu_check.sh OUT_DIR --archive an4_gpu.tar.gz              # CUDA, under 8 minutes
    bench/gpu_check.sh OUT_DIR --archive tiny.tar.gz --device cpu --tiny   # the same code paths, CPU, tiny
    bench/gpu_check.sh OUT_DIR --archive an4_gpu.tar.gz --device cpu --sections an4 --budget-s 3600
                                                      # the CPU reference for the AN4 frame accuracies

Sections (each one timed, its failure, e.g. a CUDA out-of-memory, recorded in the JSON as `error`
while the next section still runs; the JSON is rewritten after every section):
- `paper_dnn`: the paper's DNN (8 x 2560 ReLU, 26 x 40 fbank window, 14,000 outputs) training step
  in bf16 autocast: frames/s, MFU against the GPU's bf16 dense peak, and the same model fed by a
  plain shuffling DataLoader over pre-spliced windows, in the same run (bench/bench_train.py).
- `stacked_members`: K = 10 small members (2 x 256, 500 pdfs) as one stacked step vs one model at a
  time (sequential training runs at the one-model rate).
- `an4`: the recipe's neural stages on the archive's fbank stores and tri1 alignments (built by
  bench/gpu_archive.py), through the `asr-kd` entry point itself (`asr_kd.cli.main`, in this
  process so CUDA starts once): baseline DNN, K = 4 ensemble, teacher cache, student at T = 2
  (soft_ce 1.0 + hard_ce 0.5), frame accuracy of each on dev and test. Options, configs
  (recipes/an4/conf/{dnn,distill}.yaml) and seeds are the recipe's defaults, so the accuracies
  compare with README's CPU results.

Budget: timed measurements are sized from a short probe to `Sizes.target_s` seconds each; a section
is skipped when less than its minimum is left of `--budget-s`; SIGALRM at the budget stops the
section running then (recorded), and gpu_check.sh kills the process at 470 s (tiny 150 s) should it
hang inside a kernel.
Needs only torch, numpy, pyyaml and tqdm (DESIGN.md §8).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from asr_kd.cli import main as asr_kd
from asr_kd.errors import AsrKdError
from asr_kd.io import read_json, write_json
from asr_kd.nnet.models import ModelConfig, ModelSpec, count_params, init_model
from asr_kd.nnet.train import TrainConfig, resolve_device
from bench_train import (bf16_peak_tflops, make_learner, member_rate, pipeline_rates, synthetic, time_ours,
                         train_flops_per_s)
from gpu_archive import open_archive

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "recipes" / "an4" / "conf"
FEAT_DIM = 40
FORMAT = "asr_kd.gpu_check/1"


@dataclass(frozen=True)
class Sizes:
    paper_layers: int = 8
    paper_dim: int = 2560
    paper_pdfs: int = 14000
    paper_context: tuple[int, int] = (10, 15)  # 26-frame window
    paper_batch: int = 1024
    paper_big_batch: int = 4096  # a second MFU point: our pipeline only
    paper_frames: int = 60000
    small_k: int = 10
    small_layers: int = 2
    small_dim: int = 256
    small_pdfs: int = 500
    small_batch: int = 256
    small_frames: int = 60000
    target_s: float = 3.0  # seconds per timed measurement (steps sized from a probe)
    max_steps: int = 3000
    warmup: int = 10
    repeats: int = 3
    an4_layers: int = 2  # the recipe's defaults (hybrid_kd_defaults.sh)
    an4_dim: int = 256
    an4_epochs: int = 6
    an4_k: int = 4
    budget_s: float = 450.0


FULL = Sizes()
TINY = Sizes(paper_layers=2, paper_dim=64, paper_pdfs=500, paper_batch=128, paper_big_batch=256, paper_frames=3000,
             small_dim=64, small_batch=128, small_frames=3000, target_s=0.3, max_steps=8, warmup=1, repeats=1,
             an4_dim=32, an4_epochs=2, budget_s=110.0)
MIN_SECTION_S = {"paper_dnn": 60.0, "stacked_members": 30.0, "an4": 150.0}  # full size; tiny: a tenth


class BudgetExceeded(BaseException):
    """Raised by SIGALRM at the end of the budget (BaseException: library `except Exception` can't eat it)."""


class Report:
    """The JSON being built; written (atomically) after every section so a killed run leaves its results."""

    def __init__(self, path: Path, sizes: Sizes, tiny: bool):
        self.path, self.sizes, self.t0 = path, sizes, time.monotonic()
        self.data = {"format": FORMAT, "mode": "tiny" if tiny else "full", "complete": False,
                     "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "budget_s": sizes.budget_s,
                     "sizes": asdict(sizes)}

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def say(self, message: str) -> None:
        print(f"[gpu_check {self.elapsed():6.1f}s] {message}", file=sys.stderr, flush=True)

    def write(self) -> None:
        self.data["elapsed_s"] = round(self.elapsed(), 1)
        write_json(self.path, self.data)

    def run(self, name: str, min_s: float, fn, *args) -> None:
        """fn(result, *args) into self.data[name]: timed, skipped without `min_s` left, failures recorded."""
        result: dict = {}
        self.data[name] = result
        left = self.sizes.budget_s - self.elapsed()
        if left < min_s:
            result["skipped"] = f"only {left:.0f} s of the {self.sizes.budget_s:.0f} s budget left, needs {min_s:.0f}"
            self.say(f"{name}: skipped ({result['skipped']})")
            self.write()
            return
        self.say(f"{name}: start")
        t0 = time.monotonic()
        try:
            fn(result, *args)
        except BudgetExceeded:
            result["error"] = f"stopped at the {self.sizes.budget_s:.0f} s budget"
        except AsrKdError as e:  # bad input (archive, data): its message says what to do
            result["error"] = f"AsrKdError: {e}"
        except Exception as e:  # noqa: BLE001 -- one section's failure (OOM included) must not lose the others
            traceback.print_exc()
            first_line = (str(e).strip().splitlines() or [""])[0]
            result["error"] = f"{type(e).__name__}: {first_line}"
        result["section_s"] = round(time.monotonic() - t0, 1)
        self.say(f"{name}: " + (f"FAILED ({result['error']})" if "error" in result else "done") +
                 f" in {result['section_s']} s")
        free_device_memory()
        self.write()


def free_device_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def environment(device_name: str, peak_override: float | None) -> dict:
    device = resolve_device(device_name)
    info = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
            "cpu_threads": torch.get_num_threads(), "git_commit": git_commit()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        name = torch.cuda.get_device_name(device)
        peak = peak_override or bf16_peak_tflops(name)
        info.update(device_name=name, cuda=torch.version.cuda, capability=list(torch.cuda.get_device_capability(device)),
                    memory_gib=round(props.total_memory / 2**30, 1), device_count=torch.cuda.device_count(),
                    bf16_peak_tflops=peak if peak else "unknown",
                    peak_source="--peak-tflops" if peak_override else "datasheet by device name")
    else:
        info.update(device_name=f"cpu ({platform.processor() or platform.machine()})", bf16_peak_tflops=None)
    return info


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def sized_steps(rate: float, frames_per_step: int, sizes: Sizes) -> int:
    """Steps that take about `target_s` at `rate` frames/s (from a probe), within [5, max_steps]:
    the budget holds on any GPU, and a fast pipeline is still timed over thousands of steps."""
    return int(min(sizes.max_steps, max(5, sizes.target_s * rate / frames_per_step)))


def mfu(flops_per_s: float, peak) -> float | None:
    return round(flops_per_s / (peak * 1e12), 3) if isinstance(peak, float) else None


def paper_dnn(result: dict, device: torch.device, sizes: Sizes, peak) -> None:
    autocast = device.type == "cuda"
    left, right = sizes.paper_context
    model = ModelConfig(hidden_layers=sizes.paper_layers, hidden_dim=sizes.paper_dim)
    cfg = TrainConfig(model=model, left_context=left, right_context=right, batch_size=sizes.paper_batch,
                      device=str(device))
    spec = ModelSpec(model, FEAT_DIM, left, right, sizes.paper_pdfs)
    net = init_model(spec, 1)
    result.update(model=f"{model.hidden_layers}x{model.hidden_dim}", window=left + 1 + right,
                  num_pdfs=sizes.paper_pdfs, params=count_params(net), batch_size=sizes.paper_batch,
                  precision="bf16 autocast" if autocast else "fp32")
    data = synthetic(sizes.paper_frames, FEAT_DIM, sizes.paper_pdfs, device)
    probe_ours, probe_loader = pipeline_rates(spec, cfg, data, 5, 3, 1, autocast)
    steps, loader_steps = (sized_steps(rate, sizes.paper_batch, sizes) for rate in (probe_ours, probe_loader))
    ours, loader = pipeline_rates(spec, cfg, data, steps, sizes.warmup, sizes.repeats, autocast, loader_steps)
    flops = train_flops_per_s(net, ours)
    result.update(steps=steps, dataloader_steps=loader_steps, repeats=sizes.repeats, frames_per_s=round(ours),
                  dataloader_frames_per_s=round(loader), speedup_vs_dataloader=round(ours / loader, 2),
                  train_tflops_per_s=round(flops / 1e12, 3), mfu=mfu(flops, peak))
    big = replace(cfg, batch_size=sizes.paper_big_batch)
    big_steps = max(5, steps * sizes.paper_batch // sizes.paper_big_batch)
    big_rate = time_ours(make_learner(spec, 1, device), big, data, big_steps, sizes.warmup, autocast)
    result[f"batch_{sizes.paper_big_batch}"] = {"frames_per_s": round(big_rate), "steps": big_steps,
                                                "mfu": mfu(train_flops_per_s(net, big_rate), peak)}


def stacked_members(result: dict, device: torch.device, sizes: Sizes) -> None:
    autocast = device.type == "cuda"
    model = ModelConfig(hidden_layers=sizes.small_layers, hidden_dim=sizes.small_dim)
    cfg = TrainConfig(model=model, batch_size=sizes.small_batch, device=str(device))  # 11-frame window
    spec = ModelSpec(model, FEAT_DIM, cfg.left_context, cfg.right_context, sizes.small_pdfs)
    data = synthetic(sizes.small_frames, FEAT_DIM, sizes.small_pdfs, device)
    steps = sized_steps(member_rate(spec, cfg, data, 1, 5, 3, 1, autocast), sizes.small_batch, sizes)
    one = member_rate(spec, cfg, data, 1, steps, sizes.warmup, sizes.repeats, autocast)
    stacked = member_rate(spec, cfg, data, sizes.small_k, steps, sizes.warmup, sizes.repeats, autocast)
    result.update(k=sizes.small_k, model=f"{model.hidden_layers}x{model.hidden_dim}", num_pdfs=sizes.small_pdfs,
                  window=cfg.left_context + 1 + cfg.right_context, batch_size=sizes.small_batch, steps=steps,
                  stacked_member_frames_per_s=round(stacked), sequential_member_frames_per_s=round(one),
                  stacked_vs_sequential=round(stacked / one, 2))


def run_stage(result: dict, name: str, argv: list) -> None:
    """One `asr-kd` command in this process, timed into result["stage_s"]; a non-zero exit fails the section."""
    t0 = time.monotonic()
    rc = asr_kd([str(a) for a in argv])
    result["stage_s"][name] = round(time.monotonic() - t0, 1)
    if rc != 0:
        raise RuntimeError(f"asr-kd {argv[0]} exited {rc} (its error is printed above)")


def an4_size(sizes: Sizes, device: torch.device, prefix: str) -> list[str]:
    """The recipe's size overrides (its `model_size` / `student_size`), for a TrainConfig at `prefix`."""
    values = {"model.hidden_layers": sizes.an4_layers, "model.hidden_dim": sizes.an4_dim,
              "max_epochs": sizes.an4_epochs, "device": str(device)}
    return [arg for key, value in values.items() for arg in ("--set", f"{prefix}{key}={value}")]


def an4(result: dict, device: torch.device, sizes: Sizes, archive: Path, work: Path) -> None:
    manifest = open_archive(archive, work / "archive")
    paths = manifest["paths"]
    result.update(archive=str(archive), archive_mb=round(archive.stat().st_size / 2**20, 2), sets=manifest["sets"],
                  model=f"{sizes.an4_layers}x{sizes.an4_dim}", max_epochs=sizes.an4_epochs, k=sizes.an4_k,
                  temperature=2.0, stage_s={})
    exp = work / "exp"
    dnn, ens, student, cache = exp / "dnn", exp / "dnn_ensemble", exp / "student_T2", exp / "dnn_ensemble/cache_T2"
    train_dev = [*paths["train"], *paths["dev"]]
    size, student_size = an4_size(sizes, device, ""), an4_size(sizes, device, "student.")
    run_stage(result, "train", ["train", "--config", CONF / "dnn.yaml", *size, "--set", "seed=1", *train_dev, dnn])
    run_stage(result, "train_ensemble", ["train-ensemble", "--config", CONF / "dnn.yaml", *size, "--set", "seed=2",
                                         "--k", sizes.an4_k, *train_dev, ens])
    run_stage(result, "cache_teacher", ["cache-teacher", ens, "--feats", paths["train"][0], "--out", cache,
                                        "--combination", "arith", "--temperature", 2, "--device", str(device)])
    run_stage(result, "distill", ["distill", "--config", CONF / "distill.yaml", *student_size,
                                  "--set", "student.seed=1", "--teacher-cache", cache, "--set", "loss.temperature=2",
                                  "--set", "loss.terms={soft_ce: 1.0, hard_ce: 0.5}", *train_dev, student])
    systems = {"baseline": dnn, f"ensemble_arith_k{sizes.an4_k}": ens, "student_T2": student}
    result["frame_acc"], result["ce"] = {}, {}
    for system, model in systems.items():
        for name in ("dev", "test"):
            out = work / f"eval_{system}_{name}.json"
            run_stage(result, f"eval_{system}_{name}", ["eval-frames", model, *paths[name], "--combine", "arith",
                                                        "--device", str(device), "--out", out])
            scores = read_json(out)
            result["frame_acc"].setdefault(system, {})[name] = round(scores["frame_acc"], 5)
            result["ce"].setdefault(system, {})[name] = round(scores["ce"], 5)
    result["neural_stages_s"] = round(sum(result["stage_s"].values()), 1)


def goals(data: dict, device: torch.device, tiny: bool) -> dict:
    """The issue's GPU goals, judged from this run (null where not measured: CPU, tiny, failed sections)."""
    def judge(section: str, key: str, check) -> bool | None:
        value = data.get(section, {}).get(key)
        return None if tiny or device.type != "cuda" or value is None else bool(check(value))
    return {"paper_mfu_ge_0.5": judge("paper_dnn", "mfu", lambda v: v >= 0.5),
            "paper_ge_10x_dataloader": judge("paper_dnn", "speedup_vs_dataloader", lambda v: v >= 10),
            "stacked_ge_5x_sequential": judge("stacked_members", "stacked_vs_sequential", lambda v: v >= 5),
            "an4_neural_stages_le_120s": judge("an4", "neural_stages_s", lambda v: v <= 120)}


def on_alarm(signum, frame):
    raise BudgetExceeded()


def sections_arg(value: str) -> str:
    unknown = set(value.split(",")) - MIN_SECTION_S.keys()
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown section(s) {', '.join(sorted(unknown))}")
    return value


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir", help="directory for gpu_check.json")
    p.add_argument("--archive", help="fbank + tri1 alignment archive (bench/gpu_archive.py); none: no AN4 section")
    p.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu")
    p.add_argument("--tiny", action="store_true", help="tiny sizes (the CPU test of the same code paths)")
    p.add_argument("--budget-s", type=float, help="stop sections past this (default 450, tiny 110)")
    p.add_argument("--peak-tflops", type=float, help="bf16 dense peak when the GPU's name is not known")
    p.add_argument("--sections", type=sections_arg, help="comma-separated subset of paper_dnn,stacked_members,an4 "
                   "(default: all; the JSON is complete only with all)")
    p.add_argument("--work-dir", help="an empty dir to keep the models and unpacked archive in (default: a temp dir)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = TINY if args.tiny else FULL
    if args.budget_s:
        sizes = replace(sizes, budget_s=args.budget_s)
    out = Path(args.out_dir) / "gpu_check.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = Report(out, sizes, args.tiny)
    scale = 0.1 if args.tiny else 1.0
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(sizes.budget_s))
    report.run("environment", 0, lambda result: result.update(environment(args.device, args.peak_tflops)))
    if "error" in report.data["environment"]:
        return 1
    device, peak = resolve_device(args.device), report.data["environment"]["bf16_peak_tflops"]
    sections = {"paper_dnn": (paper_dnn, device, sizes, peak),
                "stacked_members": (stacked_members, device, sizes),
                "an4": (an4_section, device, sizes, args.archive, args.work_dir)}
    chosen = args.sections.split(",") if args.sections else list(sections)
    for name, (fn, *fn_args) in sections.items():
        if name in chosen:
            report.run(name, MIN_SECTION_S[name] * scale, fn, *fn_args)
        else:
            report.data[name] = {"skipped": "not in --sections"}
    signal.alarm(0)
    report.data["goals"] = goals(report.data, device, args.tiny)
    report.data["complete"] = not any({"error", "skipped"} & report.data[s].keys() for s in sections)
    report.write()
    print(json.dumps(report.data, indent=1, sort_keys=True))
    report.say(f"wrote {out} (complete: {report.data['complete']})")
    return 0 if report.data["complete"] else 1


def an4_section(result: dict, device: torch.device, sizes: Sizes, archive: str | None, work: str | None) -> None:
    if not archive:
        result["skipped"] = "no --archive given (build one with bench/gpu_archive.py)"
        return
    with work_dir(work) as path:
        an4(result, device, sizes, Path(archive), path)


@contextlib.contextmanager
def work_dir(path: str | None):
    if path:
        if Path(path).is_dir() and any(Path(path).iterdir()):
            raise AsrKdError(f"--work-dir {path} is not empty: its models would be resumed and the timings wrong")
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path)
    else:
        with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
            yield Path(tmp)


if __name__ == "__main__":
    sys.exit(main())
