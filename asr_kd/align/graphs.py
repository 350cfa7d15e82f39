"""What alignment needs from a Kaldi lang dir: symbol tables, topology, phone sets, transcripts as word ids."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from asr_kd.errors import AsrKdError
from asr_kd.io import read_lines
from asr_kd.kaldi import gmm

log = logging.getLogger(__name__)


def read_symbols(path: Path) -> dict[str, int]:
    """A Kaldi symbol table (`sym id` per line) as name -> id."""
    if not path.is_file():
        raise AsrKdError(f"{path}: symbol table not found (is this a lang dir from prepare-lang?)")
    table = {}
    for number, line in read_lines(path):
        fields = line.split()
        if len(fields) != 2 or not fields[1].isdigit():
            raise AsrKdError(f"{path}:{number}: expected 'symbol id', got {line!r}")
        table[fields[0]] = int(fields[1])
    return table


def read_int_sets(path: Path) -> list[list[int]]:
    """A `phones/*.int` file: one list of ints per line ([] if the file is absent)."""
    if not path.is_file():
        return []
    return [[int(x) for x in line.split()] for line in path.read_text().splitlines() if line.strip()]


@dataclass
class Lang:
    """The parts of a lang dir (`data/lang`) used for training and alignment."""
    path: Path
    words: dict[str, int]
    phones: dict[str, int]
    topo: object
    silence: list[int]
    disambig: list[int]
    shared_phones: list[list[int]]
    oov_word: str | None

    @property
    def phone_names(self) -> dict[int, str]:
        return {i: p for p, i in self.phones.items()}


def load_lang(lang_dir: str | Path) -> Lang:
    lang_dir = Path(lang_dir)
    oov_file = lang_dir / "oov.txt"
    return Lang(path=lang_dir, words=read_symbols(lang_dir / "words.txt"),
                phones=read_symbols(lang_dir / "phones.txt"), topo=gmm.read_topology(lang_dir / "topo"),
                silence=[p for s in read_int_sets(lang_dir / "phones/silence.int") for p in s],
                disambig=[p for s in read_int_sets(lang_dir / "phones/disambig.int") for p in s],
                shared_phones=read_int_sets(lang_dir / "phones/sets.int"),
                oov_word=oov_file.read_text(encoding="utf-8").strip() if oov_file.is_file() else None)


def word_ids(lang: Lang, utt: str, transcript: str) -> list[int]:
    """Transcript words as ids; out-of-vocabulary words map to the lang's OOV word (logged)."""
    ids = []
    for word in transcript.split():
        if word in lang.words:
            ids.append(lang.words[word])
        elif lang.oov_word in lang.words:
            log.warning("utterance %s: word %r not in %s/words.txt, using %s", utt, word, lang.path, lang.oov_word)
            ids.append(lang.words[lang.oov_word])
        else:
            raise AsrKdError(f"utterance {utt}: word {word!r} not in {lang.path}/words.txt and no oov.txt")
    return ids
