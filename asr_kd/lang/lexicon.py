"""Reading a Kaldi dict dir and adding lexicon disambiguation symbols (Kaldi's add_lex_disambig.pl).

A word may have several pronunciations (one line each). Homophones and pronunciations that are a
prefix of another get #1, #2, ... appended, otherwise L o G is not determinizable ("not functional").
"""
from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from asr_kd.errors import AsrKdError
from asr_kd.io import read_lines

RESERVED_WORDS = ("<eps>", "#0", "<s>", "</s>")


@dataclass(frozen=True)
class DictDir:
    """A Kaldi dict dir: pronunciations plus the phone inventory (each list line is one phone set)."""
    lexicon: list[tuple[str, tuple[str, ...]]]
    silence_sets: list[list[str]]
    nonsilence_sets: list[list[str]]
    optional_silence: str

    @property
    def silence_phones(self) -> list[str]:
        return [p for s in self.silence_sets for p in s]

    @property
    def nonsilence_phones(self) -> list[str]:
        return [p for s in self.nonsilence_sets for p in s]


def read_lexicon(path: str | os.PathLike, known_phones: set[str] | None = None) -> list[tuple[str, tuple[str, ...]]]:
    """`word phone1 phone2 ...` per line; duplicates of the same (word, pronunciation) are dropped.

    With `known_phones`, every phone used must be in it.
    """
    entries, seen = [], set()
    for lineno, line in read_lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            raise AsrKdError(f"{path}:{lineno}: expected 'word phone ...', got {line!r}")
        word, phones = fields[0], tuple(fields[1:])
        if word in RESERVED_WORDS or word.startswith("#"):
            raise AsrKdError(f"{path}:{lineno}: word {word!r} is reserved")
        if any(p.startswith("#") or p == "<eps>" for p in phones):
            raise AsrKdError(f"{path}:{lineno}: phone names may not be <eps> or start with '#': {line!r}")
        unknown = [p for p in phones if known_phones is not None and p not in known_phones]
        if unknown:
            raise AsrKdError(f"{path}:{lineno}: phones {unknown} of {word!r} are not in silence/nonsilence_phones.txt")
        if (word, phones) not in seen:
            seen.add((word, phones))
            entries.append((word, phones))
    if not entries:
        raise AsrKdError(f"{path}: empty lexicon")
    return entries


def read_phone_sets(path: str | os.PathLike) -> list[list[str]]:
    """One phone set per non-empty line (Kaldi groups e.g. stress variants of a phone on one line)."""
    if not Path(path).is_file():
        raise AsrKdError(f"{path}: missing from the dict dir")
    return [line.split() for _, line in read_lines(path) if line.split()]


def read_dict_dir(dict_dir: str | os.PathLike) -> DictDir:
    """Read and cross-check a dict dir: every lexicon phone is declared, no phone is declared twice."""
    d = Path(dict_dir)
    silence_sets = read_phone_sets(d / "silence_phones.txt")
    nonsilence_sets = read_phone_sets(d / "nonsilence_phones.txt")
    optional = read_phone_sets(d / "optional_silence.txt")
    if len(optional) != 1 or len(optional[0]) != 1:
        raise AsrKdError(f"{d / 'optional_silence.txt'}: expected exactly one phone")
    declared = Counter(p for s in silence_sets + nonsilence_sets for p in s)
    twice = sorted(p for p, n in declared.items() if n > 1)
    if twice:
        raise AsrKdError(f"{d}: phones declared more than once in silence/nonsilence_phones.txt: {twice}")
    if any(p.startswith("#") or p == "<eps>" for p in declared):
        raise AsrKdError(f"{d}: phone names may not be <eps> or start with '#'")
    if optional[0][0] not in {p for s in silence_sets for p in s}:
        raise AsrKdError(f"{d / 'optional_silence.txt'}: {optional[0][0]} is not in silence_phones.txt")
    lexicon = read_lexicon(_require(d / "lexicon.txt"), set(declared))
    return DictDir(lexicon, silence_sets, nonsilence_sets, optional[0][0])


def add_disambig(lexicon: list[tuple[str, tuple[str, ...]]]) -> tuple[list[tuple[str, tuple[str, ...]]], int]:
    """Append #1, #2 ... to pronunciations that are homophones or prefixes of others.

    Returns (entries with disambiguation symbols, the largest index used, 0 if none).
    """
    count = Counter(phones for _, phones in lexicon)
    prefixes = {phones[:k] for _, phones in lexicon for k in range(1, len(phones))}
    last_used: dict[tuple[str, ...], int] = defaultdict(int)
    result, max_disambig = [], 0
    for word, phones in lexicon:
        if count[phones] == 1 and phones not in prefixes:
            result.append((word, phones))
            continue
        last_used[phones] += 1
        max_disambig = max(max_disambig, last_used[phones])
        result.append((word, phones + (f"#{last_used[phones]}",)))
    return result, max_disambig


def _require(path: Path) -> Path:
    if not path.is_file():
        raise AsrKdError(f"{path}: missing from the dict dir")
    return path

