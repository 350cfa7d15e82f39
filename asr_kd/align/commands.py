"""CLI: train-mono, train-tri, align, import-kaldi-ali, ali-stats."""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from asr_kd.config import to_dict
from asr_kd.parallel import add_job_args, jobs_from_args
from asr_kd.steps.outputs import add_step_args, step_output

GMM_INPUTS = ("feats", "data_dir", "lang_dir")

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-mono", help="flat-start monophone GMM-HMM (Kaldi train_mono.sh)")
    _common(p)
    p.add_argument("out_dir")
    p.add_argument("--num-utts", type=int,
                   help="train on the N shortest utterances (default 2000, Kaldi's LibriSpeech recipe; 0 = all)")
    p.set_defaults(func=_train_mono)

    p = sub.add_parser("train-tri", help="tied-state triphone GMM-HMM from an alignment (Kaldi train_deltas.sh)")
    _common(p)
    p.add_argument("ali_dir", help="alignment store of the previous model (with final.mdl and tree)")
    p.add_argument("out_dir")
    p.add_argument("--num-leaves", type=int, help="number of tied states (tree leaves)")
    p.add_argument("--tot-gauss", type=int, help="total number of Gaussians")
    p.add_argument("--num-utts", type=int,
                   help="train on N utterances spread over the set (default 5000, Kaldi's train_5k; 0 = all)")
    p.set_defaults(func=_train_tri)

    p = sub.add_parser("align", help="forced-align a set with a GMM dir (final.mdl + tree) into an alignment store")
    _common(p)
    p.add_argument("model_dir", help="dir with final.mdl and tree (train-mono / train-tri output)")
    p.add_argument("out_dir")
    p.set_defaults(func=_align)

    p = sub.add_parser("import-kaldi-ali", help="Kaldi ali.*.gz (+ final.mdl) or ali-to-pdf text -> alignment store")
    p.add_argument("ali", help="alignment file or glob: ark (gzipped or not) of transition ids, or `utt pdf pdf ...` text")
    p.add_argument("feats", help="feature store the alignment must match frame by frame")
    p.add_argument("out_dir")
    p.add_argument("--model", help="Kaldi final.mdl (text format) to map transition ids to pdfs")
    p.add_argument("--num-pdfs", type=int, help="number of pdfs, when importing pdf ids without a model")
    p.add_argument("--lang-dir", help="lang dir: phone names for the CTM and silence phones for the stats")
    p.set_defaults(func=_import)

    p = sub.add_parser("ali-stats", help="print an alignment store's sanity stats")
    p.add_argument("ali_dir")
    p.set_defaults(func=_stats)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("feats", help="feature store (e.g. data/mfcc/train)")
    p.add_argument("data_dir", help="data dir with `text`")
    p.add_argument("lang_dir")
    p.add_argument("--config", help="YAML config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    add_job_args(p)
    add_step_args(p)


def _overrides(args, **options) -> list[str]:
    """--set overrides plus the named options that were given, as `key=value`."""
    return list(args.set) + [f"{key}={value}" for key, value in options.items() if value is not None]


def _texts(data_dir: str) -> dict[str, str]:
    from asr_kd.data.datadir import read_table

    return read_table(Path(data_dir) / "text")


def _train_mono(args) -> None:
    from asr_kd.align.mono import MonoConfig, train_mono
    from asr_kd.config import load_config

    cfg = load_config(MonoConfig, args.config, _overrides(args, num_utts=args.num_utts))
    start = time.time()
    with step_output(args, "out_dir", GMM_INPUTS, to_dict(cfg)) as claim:
        if claim.done:
            return
        out = train_mono(args.feats, _texts(args.data_dir), args.lang_dir, args.out_dir, cfg, jobs_from_args(args))
    print(f"train-mono: {out}/final.mdl in {time.time() - start:.1f} s")


def _train_tri(args) -> None:
    from asr_kd.align.tri import TriConfig, train_tri
    from asr_kd.config import load_config

    overrides = _overrides(args, num_leaves=args.num_leaves, tot_gauss=args.tot_gauss, num_utts=args.num_utts)
    cfg = load_config(TriConfig, args.config, overrides)
    start = time.time()
    with step_output(args, "out_dir", (*GMM_INPUTS, "ali_dir"), to_dict(cfg)) as claim:
        if claim.done:
            return
        out = train_tri(args.feats, _texts(args.data_dir), args.lang_dir, args.ali_dir, args.out_dir, cfg,
                        jobs_from_args(args))
    print(f"train-tri: {out}/final.mdl in {time.time() - start:.1f} s")


def _align(args) -> None:
    from asr_kd.align.alignment import AlignConfig, align_data, format_stats
    from asr_kd.config import load_config

    cfg = load_config(AlignConfig, args.config, args.set)
    start = time.time()
    with step_output(args, "out_dir", (*GMM_INPUTS, "model_dir"), to_dict(cfg)) as claim:
        if claim.done:
            return
        align_data(args.feats, _texts(args.data_dir), args.lang_dir, args.model_dir, args.out_dir, cfg,
                   jobs_from_args(args))
    print(f"align: {time.time() - start:.1f} s")
    print(format_stats(args.out_dir), end="")


def _import(args) -> None:
    from asr_kd.align.alignment import format_stats
    from asr_kd.align.kaldi_import import import_kaldi_alignment

    import_kaldi_alignment(args.ali, args.model, args.feats, args.out_dir, num_pdfs=args.num_pdfs,
                           lang_dir=args.lang_dir)
    print(format_stats(args.out_dir), end="")


def _stats(args) -> None:
    from asr_kd.align.alignment import format_stats

    print(format_stats(args.ali_dir), end="")
