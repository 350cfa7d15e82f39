"""Feature extraction speed on a data dir, printed as JSON.

    python bench/bench_features.py recipes/an4/data/train [--num-utts N] [--jobs 1 2]

Measures, in one run: decoding the audio only; decoding + fbank (one core); the whole
`compute_features` (read, fbank, per-speaker CMVN, store write) for each --jobs value.
Real-time factor per core = seconds of compute x cores used / seconds of audio.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time

from asr_kd.data.audio import load_utterance
from asr_kd.data.datadir import load_datadir, subset_datadir
from asr_kd.data.features import FeatureConfig, compute_features, compute_static


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def read_all(data, utts, rate):
    return [load_utterance(data, u, expected_rate=rate) for u in utts]


def read_and_fbank(data, utts, cfg):
    return sum(len(compute_static(load_utterance(data, u, expected_rate=cfg.sample_rate), cfg)) for u in utts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--num-utts", type=int, default=0, help="first N utterances (0: all)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    cfg = FeatureConfig().resolved()
    data = load_datadir(args.data_dir)
    utts = data.utt_ids[: args.num_utts or None]
    read_s, audio = timed(lambda: read_all(data, utts, cfg.sample_rate))
    audio_s = sum(len(a) for a in audio) / cfg.sample_rate
    fbank_s, frames = timed(lambda: read_and_fbank(data, utts, cfg))
    report = {
        "data_dir": args.data_dir, "num_utts": len(utts), "audio_seconds": round(audio_s, 2), "frames": frames,
        "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "read_only_s": round(read_s, 3),
        "read_fbank_1core_s": round(fbank_s, 3),
        "read_fbank_vs_read_only": round(fbank_s / read_s, 2),
        "rtf_per_core_read_fbank": round(fbank_s / audio_s, 5),
        "frames_per_s_1core": round(frames / fbank_s),
        "compute_features": {},
    }
    scratch = tempfile.mkdtemp(prefix="bench_features.")
    try:
        subset = subset_datadir(data, os.path.join(scratch, "data"), utts=utts) if args.num_utts else data
        for jobs in args.jobs:
            seconds, store = timed(lambda: compute_features(subset, os.path.join(scratch, f"f{jobs}"), cfg,
                                                            jobs=jobs))
            report["compute_features"][f"jobs_{jobs}"] = {
                "seconds": round(seconds, 3), "rtf_per_core": round(seconds * jobs / audio_s, 5),
                "frames_per_s": round(store.meta["num_frames"] / seconds), "vs_read_only": round(seconds / read_s, 2)}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
