"""CLI for data dirs: validate, fix, subset, split, speed perturbation, utt2dur (thin wrappers of datadir.py / audio.py)."""
from __future__ import annotations

import argparse

from asr_kd.data.audio import write_utt2dur
from asr_kd.data.datadir import fix_datadir, split_by_speaker, subset_datadir, validate_datadir
from asr_kd.data.perturb import KALDI_FACTORS, perturb_speed
from asr_kd.config import positive_int
from asr_kd.io import read_lines


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate-data-dir", help="check a Kaldi data dir (sorted, unique, UTF-8, equal key sets)")
    p.add_argument("dir")
    p.set_defaults(func=run_validate)

    p = sub.add_parser("fix-data-dir", help="sort tables and keep only utterances present in every table")
    p.add_argument("dir")
    p.set_defaults(func=run_fix)

    p = sub.add_parser("subset-data-dir", help="copy some utterances of a data dir into a new one")
    p.add_argument("src")
    p.add_argument("dst")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--utts", help="file with one utterance id per line")
    which.add_argument("--speakers", help="file with one speaker id per line")
    which.add_argument("--first", type=positive_int, help="the first N utterances in sorted order (N >= 1)")
    p.set_defaults(func=run_subset)

    p = sub.add_parser("split-data-dir", help="hold out whole speakers: SRC -> REST_DST + HELD_DST")
    p.add_argument("src")
    p.add_argument("rest_dst")
    p.add_argument("held_dst")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--fraction", type=float, help="hold out this fraction of the speakers (seeded)")
    which.add_argument("--speakers", help="file with the held-out speaker ids, one per line")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_split)

    p = sub.add_parser("perturb-speed", help="SRC -> DST with sp0.9-/sp1.1- speed-perturbed copies (Kaldi's 3-way)")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--factors", type=float, nargs="+", default=list(KALDI_FACTORS), metavar="F",
                   help="speed factors; 1.0 keeps the originals (default: %(default)s)")
    p.set_defaults(func=run_perturb)

    p = sub.add_parser("compute-utt2dur", help="write utt2dur from the audio headers")
    p.add_argument("dir")
    p.set_defaults(func=run_utt2dur)


def read_ids(path: str) -> list[str]:
    return [line.split()[0] for _, line in read_lines(path) if line.strip()]


def describe(data) -> str:
    return f"{data.path}: {len(data)} utterances, {len(data.speakers)} speakers"


def run_validate(args) -> None:
    print(describe(validate_datadir(args.dir)) + ", valid")


def run_fix(args) -> None:
    dropped = fix_datadir(args.dir)
    for name, keys in dropped.items():
        print(f"{name}: dropped {len(keys)} (first: {keys[0]})")
    print(describe(validate_datadir(args.dir)))


def run_subset(args) -> None:
    utts = read_ids(args.utts) if args.utts else None
    speakers = read_ids(args.speakers) if args.speakers else None
    print(describe(subset_datadir(args.src, args.dst, utts=utts, speakers=speakers, first=args.first)))


def run_perturb(args) -> None:
    print(describe(perturb_speed(args.src, args.dst, args.factors)))


def run_split(args) -> None:
    speakers = read_ids(args.speakers) if args.speakers else None
    rest, held = split_by_speaker(args.src, args.rest_dst, args.held_dst, fraction=args.fraction,
                                  speakers=speakers, seed=args.seed)
    print(describe(rest))
    print(describe(held))


def run_utt2dur(args) -> None:
    durations = write_utt2dur(args.dir)
    print(f"{args.dir}/utt2dur: {len(durations)} utterances, {sum(durations.values()) / 3600:.2f} hours")
