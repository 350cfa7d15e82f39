"""lang_test dir = lang dir + G.fst, the grammar built from an ARPA n-gram model."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from asr_kd.errors import AsrKdError
from asr_kd.io import atomic_path
from asr_kd.lang.ngram import read_arpa, restrict_vocab, write_arpa
from asr_kd.lang.prepare_lang import read_symbol_table

log = logging.getLogger(__name__)

NON_WORDS = ("<eps>", "#0", "<s>", "</s>")


def make_lang_test(lang_dir: str | os.PathLike, arpa_path: str | os.PathLike, out_dir: str | os.PathLike) -> None:
    """Copy `lang_dir` to `out_dir` and add G.fst from `arpa_path` (n-grams with non-lexicon words dropped)."""
    from asr_kd.kaldi.fst import arpa_to_fst

    lang_dir = Path(lang_dir)
    if not (lang_dir / "words.txt").is_file():
        raise AsrKdError(f"{lang_dir}: not a lang dir (no words.txt)")
    words = set(read_symbol_table(lang_dir / "words.txt")) - set(NON_WORDS)
    model = restrict_vocab(read_arpa(arpa_path), words, source=str(arpa_path))
    if not model.ngrams.get(1):
        raise AsrKdError(f"{arpa_path}: no n-grams left after keeping only words in {lang_dir}/words.txt")
    with atomic_path(out_dir, is_dir=True) as tmp:
        shutil.copytree(lang_dir, tmp, dirs_exist_ok=True)
        write_arpa(model, tmp / "G.arpa")
        arpa_to_fst(tmp / "G.arpa", tmp / "words.txt", tmp / "G.fst")
    log.info("%s: G.fst from %s (order %d, %d unigrams)", out_dir, arpa_path, model.order, len(model.ngrams[1]))
