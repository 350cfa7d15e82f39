"""CLI: prepare-lang, train-lm, make-lang-test."""
from __future__ import annotations

import argparse

from asr_kd.errors import AsrKdError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare-lang", help="Kaldi dict dir -> lang dir (phones, words, topo, L.fst)")
    p.add_argument("dict_dir")
    p.add_argument("lang_dir")
    p.add_argument("--sil-prob", type=float, default=0.5, help="optional silence probability between words")
    p.add_argument("--oov-word", default="<UNK>", help="word that out-of-lexicon words map to")
    p.set_defaults(func=_prepare_lang)

    p = sub.add_parser("train-lm", help="interpolated Kneser-Ney n-gram LM (ARPA) from a Kaldi text file")
    p.add_argument("text", help="Kaldi `text` file (utt-id word ...)")
    p.add_argument("out_arpa")
    p.add_argument("--order", type=int, default=2)
    p.add_argument("--lang-dir", help="also give this lang dir's unseen lexicon words (not the OOV or silence words) some probability")
    p.set_defaults(func=_train_lm)

    p = sub.add_parser("make-lang-test", help="lang dir + ARPA LM -> lang_test dir with G.fst")
    p.add_argument("lang_dir")
    p.add_argument("arpa")
    p.add_argument("out_lang_dir")
    p.set_defaults(func=_make_lang_test)


def _prepare_lang(args) -> None:
    from asr_kd.lang.prepare_lang import prepare_lang

    prepare_lang(args.dict_dir, args.lang_dir, sil_prob=args.sil_prob, oov_word=args.oov_word)


def _train_lm(args) -> None:
    from asr_kd.lang.ngram import read_transcripts, train_kneser_ney, write_arpa
    from asr_kd.lang.prepare_lang import lm_vocabulary

    vocab = lm_vocabulary(args.lang_dir) if args.lang_dir else []
    if args.order < 1:
        raise AsrKdError(f"--order must be >= 1, got {args.order}")
    write_arpa(train_kneser_ney(read_transcripts(args.text), args.order, vocab), args.out_arpa)


def _make_lang_test(args) -> None:
    from asr_kd.lang.grammar import make_lang_test

    make_lang_test(args.lang_dir, args.arpa, args.out_lang_dir)
