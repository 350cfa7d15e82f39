"""Inference latency on CPU: the K-member ensemble vs the distilled student (fp32 PyTorch, fp32
onnxruntime, int8 PyTorch), one thread and all threads, in one run, as JSON.

    python bench/bench_infer.py PKG --ensemble exp/dnn_ensemble --feats data/fbank/test \
        --ali exp/tri1_ali_test --audio-dir data/test [--utts 40] [--repeats 3] --out bench_infer.json

Each speed is given as `wall` and `cpu` (this process's CPU time, see `Clock`); the goals use CPU
time at one thread, because the wall clock of a shared machine measures its other users too.
- `am_ms_per_s`: acoustic-model milliseconds per second of audio: windows -> log-likelihoods of
  each utterance of `--feats` (first `--utts`), one utterance per call as `transcribe` runs it;
  the median of `--repeats` passes (the machine may be shared: ratios come from one run).
- `rtf`: end-to-end real-time factor, audio file -> words (read, resample, fbank, CMN, acoustic
  model, HCLG decode, word times) over the first `--utts` recordings of `--audio-dir`'s wav.scp,
  seconds of compute / seconds of audio, with the acoustic model of each system swapped in.
- `frame_acc` of the fp32 and int8 student on the whole `--feats` set (`--ali` labels).
- goals (issue 13): student AM >= K x faster than the ensemble; int8 >= 2x faster than fp32
  with <= 0.3 points frame-accuracy loss; end-to-end RTF <= 0.05 on one thread (fp32 student).
The ensemble runs its members as one stacked call (`nnet.ensemble.MemberGroup`), as
`compute-loglikes` does; its log-likelihoods are the arithmetic mean of the members' posteriors
minus the same log prior.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from asr_kd.data.datadir import load_datadir
from asr_kd.data.features import load_features
from asr_kd.deploy.evaluate import evaluate_package
from asr_kd.deploy.transcribe import OnnxBackend, TorchBackend, load_model
from asr_kd.io import write_json
from asr_kd.nnet.ensemble import Ensemble, combine_logits
from asr_kd.nnet.infer import log_priors
from asr_kd.nnet.models import count_params


class EnsembleBackend:
    """The K-member ensemble behind the backend interface: windows -> log-likelihoods."""

    def __init__(self, ensemble_dir: str, priors_file: Path):
        self.ensemble = Ensemble.load(ensemble_dir)
        spec = self.ensemble.members[0][1]
        self.left, self.right, self.spec = spec.left_context, spec.right_context, spec
        self.log_prior = log_priors(np.load(priors_file), self.ensemble.num_pdfs)
        self.params = sum(count_params(m) for m, _ in self.ensemble.members)

    @torch.no_grad()
    def __call__(self, windows: torch.Tensor) -> np.ndarray:
        member_logits = torch.cat([g.logits(windows.float()) for g in self.ensemble.groups()])
        return (combine_logits(member_logits) - self.log_prior).numpy()


def backends(pkg_path: str, ensemble_dir: str, threads: int) -> dict:
    model = load_model(pkg_path)
    pkg = model.package
    out = {"ensemble": EnsembleBackend(ensemble_dir, pkg.file("priors.npy")),
           "student_fp32_torch": TorchBackend(pkg), "student_int8_torch": TorchBackend(pkg, int8=True)}
    if pkg.has_onnx:
        out["student_fp32_onnx"] = OnnxBackend(pkg, threads=threads)
    return out


class Clock:
    """Wall and CPU seconds of this process. On a shared machine the wall clock counts the other
    users' load too; CPU time counts only this process's work (for one thread: what one free core
    would take), so both are reported."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    def __enter__(self):
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall += time.perf_counter() - self._wall
        self.cpu += time.process_time() - self._cpu


def am_ms_per_s(model, backend, feats: list[np.ndarray], repeats: int) -> dict:
    model.acoustic_model = backend
    audio_s = sum(len(x) for x in feats) * model.feature_config.frame_shift_ms / 1000.0
    model.loglikes(feats[0])  # warm-up
    passes = []
    for _ in range(repeats):
        with Clock() as clock:
            for x in feats:
                model.loglikes(x)
        passes.append(clock)
    return {"wall": round(1000.0 * statistics.median(c.wall for c in passes) / audio_s, 3),
            "cpu": round(1000.0 * statistics.median(c.cpu for c in passes) / audio_s, 3)}


def end_to_end_rtf(model, backend, files: list[str]) -> dict:
    """Compute seconds per audio second, audio file -> words, and the wall-time share of each part."""
    model.acoustic_model = backend
    model.transcribe(files[0])  # warm-up: graph load, first calls
    audio_s, parts, clock = 0.0, {}, Clock()
    for path in files:
        with clock:
            result = model.transcribe(path)
        audio_s += result.duration
        for part, seconds in result.seconds.items():
            parts[part] = parts.get(part, 0.0) + seconds
    return {"wall": round(clock.wall / audio_s, 4), "cpu": round(clock.cpu / audio_s, 4),
            "wall_per_part": {k: round(v / audio_s, 4) for k, v in parts.items()}}


def run(args) -> dict:
    store = load_features(args.feats)
    feats = [np.asarray(store[u], np.float32) for u in store.keys[:args.utts]]
    data = load_datadir(args.audio_dir)
    files = [data.wav_scp[data.recording_of(u)] for u in data.utt_ids[:args.utts]]
    all_threads = os.cpu_count() or 1
    model = load_model(args.package)
    result = {"machine": {"cpus": all_threads, "platform": platform.platform(), "torch": torch.__version__,
                          "load_avg_before": os.getloadavg()},
              "utterances": len(feats), "audio_seconds": sum(len(x) for x in feats) / 100.0, "repeats": args.repeats,
              "am_ms_per_s": {}, "rtf": {}}
    for threads in (1, all_threads):
        torch.set_num_threads(threads)
        systems = backends(args.package, args.ensemble, threads)
        key = f"{threads}_thread" + ("s" if threads > 1 else "")
        result["am_ms_per_s"][key] = {name: am_ms_per_s(model, b, feats, args.repeats) for name, b in systems.items()}
        result["rtf"][key] = {name: end_to_end_rtf(model, b, files) for name, b in systems.items()}
        result["num_members"] = len(systems["ensemble"].ensemble)
        result["params"] = {"ensemble": systems["ensemble"].params,
                            "student": count_params(systems["student_fp32_torch"].module)}
    torch.set_num_threads(all_threads)
    result["frame_acc"] = {b: evaluate_package(args.package, args.feats, args.ali, backend=b)["frame_acc"]
                           for b in ("torch", "int8")}
    result["machine"]["load_avg_after"] = os.getloadavg()
    result["goals"] = goals(result)
    return result


def goals(r: dict) -> dict:
    """The issue's goals on one-thread numbers; speeds as CPU time (the machine may be shared)."""
    one = {name: v["cpu"] for name, v in r["am_ms_per_s"]["1_thread"].items()}
    k = r["num_members"]
    speedup = one["ensemble"] / one["student_fp32_torch"]
    int8_speedup = one["student_fp32_torch"] / one["student_int8_torch"]
    loss_points = 100.0 * (r["frame_acc"]["torch"] - r["frame_acc"]["int8"])
    rtf = r["rtf"]["1_thread"]["student_fp32_torch"]["cpu"]
    return {
        "student_vs_ensemble_am_speedup": {"value": round(speedup, 2), "goal": f">= K = {k}", "met": speedup >= k},
        "int8_vs_fp32_am_speedup": {"value": round(int8_speedup, 2), "goal": ">= 2", "met": int8_speedup >= 2},
        "int8_frame_acc_loss_points": {"value": round(loss_points, 3), "goal": "<= 0.3", "met": loss_points <= 0.3},
        "student_fp32_rtf_1_thread_cpu": {"value": rtf, "goal": "<= 0.05", "met": rtf <= 0.05},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("package")
    p.add_argument("--ensemble", required=True, help="ensemble dir (ensemble.json + member_<i>/)")
    p.add_argument("--feats", required=True, help="feature store of the timed set (the package's features)")
    p.add_argument("--ali", required=True, help="alignment store of that set (frame accuracy)")
    p.add_argument("--audio-dir", required=True, help="data dir whose audio is transcribed for the end-to-end RTF")
    p.add_argument("--utts", type=int, default=40, help="utterances timed (first N)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args()
    result = run(args)
    if args.out:
        write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
