"""CLI: train-mono, train-tri, train-lda-mllt, train-sat, feature-view, adapt-feats, align, import-kaldi-ali, ali-stats."""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from asr_kd.config import positive_int, to_dict
from asr_kd.expdir import write_system
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
    p.add_argument("--tot-gauss", type=positive_int,
                   help="total number of Gaussians (default 1000, Kaldi's train_mono.sh; its egs/yesno: 400)")
    p.set_defaults(func=_train_mono)

    p = sub.add_parser("train-tri", help="tied-state triphone GMM-HMM from an alignment (Kaldi train_deltas.sh)")
    _common(p)
    p.add_argument("ali_dir", help="alignment store of the previous model (with final.mdl and tree)")
    p.add_argument("out_dir")
    p.add_argument("--num-leaves", type=int_or_auto, help="number of tied states (tree leaves); auto: from the hours "
                   "of training audio by Kaldi's recipes' sizes (align/tri.py KALDI_GMM_SIZES)")
    p.add_argument("--tot-gauss", type=int_or_auto, help="total number of Gaussians; auto: as --num-leaves")
    p.add_argument("--num-utts", type=int,
                   help="train on N utterances spread over the set (default 5000, Kaldi's train_5k; 0 = all)")
    p.set_defaults(func=_train_tri)

    for name, what in (("train-lda-mllt", "LDA+MLLT triphone GMM-HMM (tri2) from an alignment (Kaldi train_lda_mllt.sh)"),
                       ("train-sat", "speaker-adaptive (fMLLR) triphone GMM-HMM (tri3) from an LDA+MLLT "
                                     "alignment (Kaldi train_sat.sh)")):
        p = sub.add_parser(name, help=what)
        _common(p)
        p.add_argument("ali_dir", help="alignment store of the previous model (with final.mdl and tree)")
        p.add_argument("out_dir")
        p.add_argument("--num-leaves", type=int_or_auto, help="number of tied states (tree leaves); auto: as train-tri")
        p.add_argument("--tot-gauss", type=int_or_auto, help="total number of Gaussians; auto: as train-tri")
        p.add_argument("--num-utts", type=int, help="train on N utterances spread over the set (0 = all)")
        p.set_defaults(func=_train_lda_mllt if name == "train-lda-mllt" else _train_sat)

    p = sub.add_parser("feature-view", help="a feature store seen through an LDA+MLLT/SAT model's splicing and "
                                            "transform (speaker-independent), for align/decode --feats")
    p.add_argument("model_dir", help="train-lda-mllt / train-sat output (or its alignment store)")
    p.add_argument("store")
    p.add_argument("out_dir")
    p.set_defaults(func=_feature_view)

    p = sub.add_parser("adapt-feats", help="per-speaker fMLLR of a set from its text with a SAT model -> "
                                           "adapted feature view (Kaldi align_fmllr.sh's adaptation)")
    p.add_argument("sat_dir")
    p.add_argument("store")
    p.add_argument("data_dir", help="data dir with utt2spk (and `text`, unless --text)")
    p.add_argument("lang_dir")
    p.add_argument("out_dir")
    p.add_argument("--text", help="transcripts to align (default DATA_DIR/text)")
    p.add_argument("--silence-weight", type=float, default=0.0, help="weight of silence frames in the fMLLR stats")
    add_job_args(p)
    p.set_defaults(func=_adapt_feats)

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


def _feats(path: str):
    """The feature store at `path`, refused (naming it) if it is another kind of store or holds NaN/inf."""
    from asr_kd.data.feature_view import VIEW_FILE, open_feats
    from asr_kd.data.store import RaggedStore, check_finite, expect_kind

    if (Path(path) / VIEW_FILE).is_file():   # a view (feature-view, adapt-feats): checked through its source
        view = open_feats(path)
        check_finite(expect_kind(view.source, "features", "features"))
        return view
    store = expect_kind(RaggedStore(path), "features", "features")
    check_finite(store)
    return store


def _train_mono(args) -> None:
    from asr_kd.align.mono import MonoConfig, train_mono
    from asr_kd.config import load_config

    cfg = load_config(MonoConfig, args.config, _overrides(args, num_utts=args.num_utts, tot_gauss=args.tot_gauss))
    start = time.time()
    with step_output(args, "out_dir", GMM_INPUTS, to_dict(cfg)) as claim:
        if claim.done:
            return
        out = train_mono(_feats(args.feats), _texts(args.data_dir), args.lang_dir, args.out_dir, cfg,
                         jobs_from_args(args))
        write_system(out, "gmm", stage="mono", config=to_dict(cfg))
    print(f"train-mono: {out}/final.mdl in {time.time() - start:.1f} s")


def int_or_auto(text: str) -> int | str:
    """argparse type: a positive integer or 'auto'."""
    return text if text == "auto" else positive_int(text)


def _auto_sizes(args, feats) -> None:
    """Replace 'auto' --num-leaves/--tot-gauss by Kaldi's sizes for the hours of audio in `feats`."""
    from asr_kd.align.tri import gmm_sizes

    if "auto" not in (args.num_leaves, args.tot_gauss):
        return
    hours = int(feats.meta["num_rows"]) * float(feats.meta.get("frame_shift_ms", 10.0)) / 3.6e6
    leaves, gauss = gmm_sizes(hours)
    args.num_leaves = leaves if args.num_leaves == "auto" else args.num_leaves
    args.tot_gauss = max(gauss, args.num_leaves) if args.tot_gauss == "auto" else args.tot_gauss
    print(f"train-tri: {hours:.2f} h of training audio -> --num-leaves {args.num_leaves} --tot-gauss {args.tot_gauss} "
          f"(Kaldi's recipe sizes per hours of data)")


def _tri_config(args, config_class, feats):
    """The config of train-tri / train-lda-mllt / train-sat: --config, --set, the size options ('auto' resolved on `feats`)."""
    from asr_kd.config import load_config

    _auto_sizes(args, feats)
    overrides = _overrides(args, num_leaves=args.num_leaves, tot_gauss=args.tot_gauss, num_utts=args.num_utts)
    return load_config(config_class, args.config, overrides)


def _train_tri(args) -> None:
    from asr_kd.align.tri import TriConfig, train_tri

    feats = _feats(args.feats)
    cfg = _tri_config(args, TriConfig, feats)
    start = time.time()
    with step_output(args, "out_dir", (*GMM_INPUTS, "ali_dir"), to_dict(cfg)) as claim:
        if claim.done:
            return
        out = train_tri(feats, _texts(args.data_dir), args.lang_dir, args.ali_dir, args.out_dir, cfg,
                        jobs_from_args(args))
        write_system(out, "gmm", stage="tri", config=to_dict(cfg))
    print(f"train-tri: {out}/final.mdl in {time.time() - start:.1f} s")


def _train_lda_mllt(args) -> None:
    from asr_kd.align.lda_mllt import LdaMlltConfig, train_lda_mllt

    start = time.time()
    out = train_lda_mllt(args.feats, _texts(args.data_dir), args.lang_dir, args.ali_dir, args.out_dir,
                         _tri_config(args, LdaMlltConfig, _feats(args.feats)), jobs_from_args(args))
    print(f"train-lda-mllt: {out}/final.mdl in {time.time() - start:.1f} s")


def _train_sat(args) -> None:
    from asr_kd.align.sat import SatConfig, train_sat

    start = time.time()
    out = train_sat(args.feats, args.data_dir, args.lang_dir, args.ali_dir, args.out_dir,
                    _tri_config(args, SatConfig, _feats(args.feats)), jobs_from_args(args))
    print(f"train-sat: {out}/final.mdl in {time.time() - start:.1f} s")


def _feature_view(args) -> None:
    from asr_kd.data.feature_view import model_view

    view = model_view(args.model_dir, args.store, args.out_dir)
    print(f"{view.path}: view of {args.store}, dim {view.meta['dim']}")


def _adapt_feats(args) -> None:
    from asr_kd.align.sat import adapt_set
    from asr_kd.data.datadir import read_table

    texts = read_table(args.text) if args.text else _texts(args.data_dir)
    start = time.time()
    summary = adapt_set(args.sat_dir, args.store, texts, read_table(Path(args.data_dir) / "utt2spk"), args.lang_dir,
                        args.out_dir, silence_weight=args.silence_weight, jobs=jobs_from_args(args))
    print(f"adapt-feats: {args.out_dir}: fMLLR for {summary['speakers']} speakers, auxf improvement "
          f"{summary['impr_per_frame']:.4f} per frame, {len(summary['unadapted'])} unadapted, in {time.time() - start:.1f} s")


def _align(args) -> None:
    from asr_kd.align.alignment import AlignConfig, align_data, format_stats
    from asr_kd.config import load_config

    cfg = load_config(AlignConfig, args.config, args.set)
    start = time.time()
    with step_output(args, "out_dir", (*GMM_INPUTS, "model_dir"), to_dict(cfg), replaced_whole=True) as claim:
        if claim.done:
            return
        align_data(_feats(args.feats), _texts(args.data_dir), args.lang_dir, args.model_dir, args.out_dir, cfg,
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
