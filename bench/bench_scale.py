"""Whole-recipe scale benchmark: every stage's wall time and peak RSS on N x AN4, printed as JSON.

    python bench/bench_scale.py --work /tmp/bscale --ns 1 3 9 [--train-dir /work/an4ref/data/train]

Builds a training corpus of N x the train data dir (N = 1: the originals; N = 3: Kaldi's 3-way
speed perturbation 0.9/1.0/1.1 (`asr_kd.data.perturb`, `sp0.9-`/`sp1.1-` entries resampled
in-process with soxr); N = 9: those three speeds x 3 repeats whose utterance, speaker and
recording ids carry an `r2-`/`r3-` prefix), then runs the recipe's stages on it, each as its own
`python -m asr_kd ...` process with `--nj` where the command takes it:
features (MFCC, fbank) -> train-mono -> align (mono) -> train-tri -> align (tri1) -> a DNN
(train) -> a K = 2 ensemble (train-ensemble) -> a top-k teacher cache (cache-teacher) -> one
student (distill). GMM sizes (--num-leaves/--tot-gauss) and DNN sizes/epochs are fixed across
N, and the GMMs train on every utterance (--gmm-num-utts 0), so each stage's work is linear in N.

Why each stage is a separate process: wall time and peak RSS are then per stage. Peak RSS is the
ru_maxrss that os.wait4 returns for that child: on Linux the largest resident set of the child
or any of its (reaped) pool workers, i.e. of the largest single process, not their sum.

Each N's results go to WORK/n<N>/result.json as soon as that N finishes (a run per N can be
launched separately); the printed summary is built from every result.json under WORK: per stage
the least-squares exponent of time against N (and against frames) on log-log axes, the RSS
ratio at the largest N over N = 1 against the goals (exponent <= 1.1, RSS ratio <= 2), and a
projection to LibriSpeech 100 h / 960 h on a 16-core machine (assumptions in the JSON).
Wall times are only comparable on an equally loaded machine: os.getloadavg() is recorded before
and after each stage, and so are its CPU seconds (user + sys of the child and its reaped pool
workers, from the same wait4), whose exponent is also given: contention inflates them far less.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time

from asr_kd.data.datadir import DataDir, load_datadir, subset_datadir, write_datadir
from asr_kd.data.perturb import KALDI_FACTORS, perturb_speed
from asr_kd.io import write_json, write_text

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONF = os.path.join(REPO, "recipes", "an4", "conf")
AN4_REF = "/work/an4ref"
GOAL_EXPONENT = 1.1
GOAL_RSS_RATIO = 2.0
TARGET_FRAMES = {"librispeech_100": 36_000_000, "librispeech_960": 345_000_000}
TARGET_CORES = 16
NNET_STAGES = ("train_dnn", "train_ensemble", "distill")


# ------------------------------------------------------------------ corpus
def repeat_copy(data: DataDir, prefix: str) -> dict[str, dict]:
    """The tables of a copy of `data` whose utterance, speaker and recording ids carry `prefix`."""
    if data.segments:
        raise SystemExit(f"{data.path}: data dirs with segments are not supported by this benchmark")
    return {"wav_scp": {prefix + k: v for k, v in data.wav_scp.items()},
            "utt2spk": {prefix + u: prefix + s for u, s in data.utt2spk.items()},
            "text": {prefix + u: t for u, t in (data.text or {}).items()},
            "utt2dur": {prefix + u: d for u, d in (data.utt2dur or {}).items()}}


def build_corpus(train_dir: str, n: int, out: str) -> DataDir:
    """N x `train_dir`: N = 1 itself, 3 the three speeds, 3R the three speeds x R repeats."""
    if n == 1:
        return subset_datadir(train_dir, out, utts=load_datadir(train_dir).utt_ids)
    if n % 3:
        raise SystemExit(f"--ns {n}: N must be 1 or a multiple of 3 (3 speeds x N/3 repeats)")
    speeds = perturb_speed(train_dir, out + ".sp", KALDI_FACTORS)
    tables: dict[str, dict] = {"wav_scp": {}, "utt2spk": {}, "text": {}, "utt2dur": {}}
    for repeat in range(1, n // 3 + 1):
        for name, table in repeat_copy(speeds, "" if repeat == 1 else f"r{repeat}-").items():
            tables[name].update(table)
    shutil.rmtree(out + ".sp")
    return write_datadir(out, wav_scp=tables["wav_scp"], utt2spk=tables["utt2spk"], text=tables["text"],
                         utt2dur=tables["utt2dur"] or None)


# ------------------------------------------------------------------ one stage
def run_stage(name: str, argv: list[str], log_dir: str) -> dict:
    """Run `python -m asr_kd ARGV` as a child; its wall seconds, peak RSS (MB) and the load around it."""
    load_before = os.getloadavg()
    start = time.perf_counter()
    with open(os.path.join(log_dir, f"{name}.log"), "w") as log:
        # one OpenMP thread per process, as the recipes run them (two spin on a loaded machine: CPU without work)
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        child = subprocess.Popen([sys.executable, "-m", "asr_kd", *argv], stdout=log, stderr=subprocess.STDOUT,
                                 env=env)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if child.returncode != 0:
        raise SystemExit(f"stage {name} failed (exit {child.returncode}); see {log_dir}/{name}.log")
    record = {"seconds": round(seconds, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
              "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
              "loadavg_before": [round(x, 2) for x in load_before],
              "loadavg_after": [round(x, 2) for x in os.getloadavg()]}
    print(f"  {name}: {record['seconds']} s, {record['peak_rss_mb']} MB, load {record['loadavg_after'][0]}",
          file=sys.stderr, flush=True)
    return record


def stage_commands(args, data: str, work: str) -> list[tuple[str, list[str]]]:
    """(stage name, asr_kd argv) in recipe order; `dev_align` makes the dev labels for the DNNs' tree."""
    nj = ["--nj", str(args.nj)]
    lang, dev_mfcc, dev_fbank = args.lang, f"{args.dev_feats}/mfcc/dev", f"{args.dev_feats}/fbank/dev"
    mfcc, fbank = f"{work}/mfcc", f"{work}/fbank"
    mono, tri1, ali, ali_dev = f"{work}/mono", f"{work}/tri1", f"{work}/tri1_ali", f"{work}/tri1_ali_dev"
    one_epoch = ["--set", "max_epochs=1", "--set", "min_epochs=1", "--set", "device=cpu"]
    student_epoch = ["--set", "student.max_epochs=1", "--set", "student.min_epochs=1",
                     "--set", "student.device=cpu"]
    sup = [fbank, ali, dev_fbank, ali_dev]
    return [
        ("features_mfcc", ["compute-features", "--config", f"{CONF}/mfcc.yaml", *nj, data, mfcc]),
        ("features_fbank", ["compute-features", "--config", f"{CONF}/fbank.yaml", *nj, data, fbank]),
        ("train_mono", ["train-mono", *nj, "--num-utts", str(args.gmm_num_utts), mfcc, data, lang, mono]),
        ("align_mono", ["align", *nj, mfcc, data, lang, mono, f"{mono}_ali"]),
        ("train_tri", ["train-tri", *nj, "--num-leaves", str(args.num_leaves), "--tot-gauss", str(args.tot_gauss),
                       "--num-utts", str(args.gmm_num_utts), mfcc, data, lang, f"{mono}_ali", tri1]),
        ("align_tri", ["align", *nj, mfcc, data, lang, tri1, ali]),
        ("dev_align", ["align", *nj, dev_mfcc, args.dev_dir, lang, tri1, ali_dev]),
        ("train_dnn", ["train", "--config", f"{CONF}/dnn.yaml", *one_epoch, *sup, f"{work}/dnn"]),
        ("train_ensemble", ["train-ensemble", "--config", f"{CONF}/dnn.yaml", *one_epoch, "--set", "seed=2",
                            "--k", "2", *sup, f"{work}/ensemble"]),
        ("cache_teacher", ["cache-teacher", f"{work}/ensemble", "--feats", fbank, "--out", f"{work}/cache",
                           "--combination", "arith", "--temperature", "2", "--top-k", str(args.top_k),
                           "--device", "cpu", *nj]),
        ("distill", ["distill", "--config", f"{CONF}/distill.yaml", *student_epoch, "--set", "loss.temperature=2",
                     "--teacher-cache", f"{work}/cache", *sup, f"{work}/student"]),
    ]


def run_n(args, n: int) -> dict:
    """Build N x train, run every stage on it; the result (also written to WORK/n<N>/result.json)."""
    work = os.path.join(args.work, f"n{n}")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(work, "log"))
    train = args.train_dir
    if args.num_utts:
        train = subset_datadir(train, os.path.join(work, "train_subset"), first=args.num_utts).path
    print(f"N = {n}: building the corpus", file=sys.stderr, flush=True)
    data = build_corpus(str(train), n, os.path.join(work, "data"))
    result = {"n": n, "num_utts": len(data), "frames": None, "complete": False, "stages": {}}
    for name, argv in stage_commands(args, str(data.path), work):
        result["stages"][name] = run_stage(name, argv, os.path.join(work, "log"))
        if name == args.stop_after:
            break
        if result["frames"] is None:
            with open(os.path.join(work, "mfcc", "meta.json")) as f:
                result["frames"] = json.load(f)["num_frames"]
        write_result(work, result)  # after every stage: a run cut short still reports what finished
    result["complete"] = args.stop_after is None  # False: every stage up to --stop-after only
    write_result(work, result)
    if not args.keep:
        for sub in ("mfcc", "fbank", "cache", "mono_ali", "tri1_ali", "mono", "dnn", "ensemble", "student"):
            shutil.rmtree(os.path.join(work, sub), ignore_errors=True)
    return result


def write_result(work: str, result: dict) -> None:
    write_json(os.path.join(work, "result.json"), result)


# ------------------------------------------------------------------ summary
def loglog_slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y on log x (the exponent of y ~ x^e); None with < 2 points."""
    if len(xs) < 2:
        return None
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def cpu_divisor_16(stage: str) -> float:
    """Cores that share a stage's CPU seconds on the 16-core machine: shards spread over all 16; a DNN
    stage keeps torch's 2 intra-op threads of this machine (no better use of more cores assumed)."""
    return 2.0 if stage in NNET_STAGES else float(TARGET_CORES)


def speedup_16(stage: str, nj: int) -> tuple[float, str]:
    """The speed-up assumed for `stage` going from this run's --nj to a 16-core machine, and why."""
    if stage in NNET_STAGES:
        return 1.0, ("torch CPU training of a small DNN does not scale with cores (one process, small "
                     "matrices): no speed-up assumed; in practice this runs on a GPU")
    return TARGET_CORES / nj, (f"utterance shards: --nj {nj} here -> --nj {TARGET_CORES}, assumed perfectly "
                               f"parallel (the serial part, e.g. tree building and GMM updates, is not separated)")


def summarise(results: list[dict], args) -> dict:
    results = sorted(results, key=lambda r: r["n"])
    names = [name for name, _ in stage_commands(args, "", "")]
    per_stage = {}
    for name in names:
        have = [r for r in results if name in r["stages"]]  # a run cut short lacks its last stages
        if not have:
            continue
        base, top = have[0], have[-1]
        secs = [r["stages"][name]["seconds"] for r in have]
        exp_n = loglog_slope([r["n"] for r in have], secs)
        exp_frames = loglog_slope([r["frames"] for r in have], secs)
        exp_cpu = loglog_slope([r["n"] for r in have], [r["stages"][name]["cpu_seconds"] for r in have])
        rss_ratio = top["stages"][name]["peak_rss_mb"] / base["stages"][name]["peak_rss_mb"] \
            if len(have) > 1 and base["n"] == 1 else None
        speedup, why = speedup_16(name, args.nj)
        per_frame = top["stages"][name]["seconds"] / top["frames"]
        cpu_per_frame = top["stages"][name]["cpu_seconds"] / top["frames"]
        per_stage[name] = {
            "seconds_by_n": {str(r["n"]): r["stages"][name]["seconds"] for r in have},
            "peak_rss_mb_by_n": {str(r["n"]): r["stages"][name]["peak_rss_mb"] for r in have},
            "rss_ratio_of_n": f"{top['n']}/{base['n']}",
            "projection_from_n": top["n"],
            "exponent_vs_n": None if exp_n is None else round(exp_n, 3),
            "exponent_vs_frames": None if exp_frames is None else round(exp_frames, 3),
            "cpu_seconds_by_n": {str(r["n"]): r["stages"][name]["cpu_seconds"] for r in have},
            "cpu_exponent_vs_n": None if exp_cpu is None else round(exp_cpu, 3),
            "rss_ratio_largest_n_over_1": None if rss_ratio is None else round(rss_ratio, 3),
            "meets_exponent_goal": None if exp_n is None else exp_n <= GOAL_EXPONENT,
            "meets_rss_goal": None if rss_ratio is None else rss_ratio <= GOAL_RSS_RATIO,
            "projection_hours_16_cores": {k: round(per_frame * f / speedup / 3600, 2)
                                          for k, f in TARGET_FRAMES.items()},
            "projection_speedup_assumed": speedup, "projection_assumption": why,
            "projection_hours_16_cores_from_cpu": {k: round(cpu_per_frame * f / cpu_divisor_16(name) / 3600, 2)
                                                   for k, f in TARGET_FRAMES.items()},
        }
    fixed = [s for s in per_stage if s != "dev_align"]  # constant work: no scaling goal
    return {
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "shared": "2 cores shared with other jobs: see loadavg per stage; cpu_seconds (user + sys "
                              "of the stage and its pool workers) is far less sensitive to that than wall time"},
        "settings": {"nj": args.nj, "gmm_num_utts": args.gmm_num_utts, "num_leaves": args.num_leaves,
                     "tot_gauss": args.tot_gauss, "dnn": "recipes/an4/conf/dnn.yaml (2 x 256), 1 epoch, cpu",
                     "ensemble_k": 2, "top_k": args.top_k, "student": "distill.yaml, 1 epoch, T = 2",
                     "corpus": "N=1 originals; N=3 speeds 0.9/1.0/1.1; N=3R those x R repeats (r2-, r3- ids)",
                     "dev_align": "aligns the fixed dev set with this N's tri1 (labels for the DNNs' dev "
                                  "checks): constant work, not a scaled stage"},
        "goals": {"exponent_max": GOAL_EXPONENT, "rss_ratio_max": GOAL_RSS_RATIO},
        "runs": [{k: r.get(k) for k in ("n", "num_utts", "frames", "complete")} for r in results],
        "stages": per_stage,
        "exponent_goal_missed_by": [s for s in fixed if per_stage[s]["meets_exponent_goal"] is False],
        "cpu_exponent_goal_missed_by": [s for s in fixed if (per_stage[s]["cpu_exponent_vs_n"] or 0) > GOAL_EXPONENT],
        "rss_goal_missed_by": [s for s in fixed if per_stage[s]["meets_rss_goal"] is False],
        "not_measured_above_n1": [s for s in fixed if per_stage[s]["meets_exponent_goal"] is None],
        "projection": {
            "basis": "seconds per frame at the largest N that ran the stage (projection_from_n) x target "
                     "frames / speed-up",
            "target_frames": TARGET_FRAMES, "target_cores": TARGET_CORES,
            "caveats": "the recipe trains mono/tri1 on subsets (2000/5000 utterances) at LibriSpeech scale, so "
                       "their projection (all utterances) is an upper bound; DNN stages are per epoch",
            "cpu_basis": "CPU seconds per frame at that N x target frames / cores the stage would use "
                         "(16 for shard stages, 2 torch threads for DNN stages): what a machine that is not "
                         "shared would take, if the shards parallelise perfectly",
            "total_hours_16_cores": {k: round(sum(per_stage[s]["projection_hours_16_cores"][k] for s in fixed), 2)
                                     for k in TARGET_FRAMES},
            "total_hours_16_cores_from_cpu": {
                k: round(sum(per_stage[s]["projection_hours_16_cores_from_cpu"][k] for s in fixed), 2)
                for k in TARGET_FRAMES}},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="scratch dir: WORK/n<N>/ per corpus size (large)")
    parser.add_argument("--ns", type=int, nargs="*", default=[1, 3, 9], help="corpus sizes to run now")
    parser.add_argument("--train-dir", default=f"{AN4_REF}/data/train")
    parser.add_argument("--dev-dir", default=f"{AN4_REF}/data/dev")
    parser.add_argument("--dev-feats", default=f"{AN4_REF}/data", help="root holding mfcc/dev and fbank/dev")
    parser.add_argument("--lang", default=f"{AN4_REF}/data/lang")
    parser.add_argument("--num-utts", type=int, default=0, help="first N train utterances only (0: all)")
    parser.add_argument("--nj", type=int, default=2)
    parser.add_argument("--gmm-num-utts", type=int, default=0, help="train-mono/train-tri --num-utts (0: all)")
    parser.add_argument("--num-leaves", type=int, default=500)
    parser.add_argument("--tot-gauss", type=int, default=4000)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--stop-after", metavar="STAGE", help="run the stages up to this one only (e.g. "
                        "features_fbank)")
    parser.add_argument("--keep", action="store_true", help="keep the feature stores and models")
    parser.add_argument("--out", help="also write the summary JSON here")
    args = parser.parse_args()
    names = [name for name, _ in stage_commands(args, "", "")]
    if args.stop_after and args.stop_after not in names:
        parser.error(f"--stop-after {args.stop_after}: not a stage ({', '.join(names)})")
    for n in args.ns:
        run_n(args, n)
    results = []
    for path in glob.glob(os.path.join(args.work, "n*", "result.json")):
        with open(path) as f:
            results.append(json.load(f))
    if not results:
        raise SystemExit(f"{args.work}: no result.json yet")
    summary = summarise(results, args)
    text = json.dumps(summary, indent=2)
    if args.out:
        write_text(args.out, text + "\n")
    print(text)


if __name__ == "__main__":
    main()
