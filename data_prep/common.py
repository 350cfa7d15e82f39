"""What every corpus preparer shares: the dict dir, OOV checks, the summary, the CLI (downloads: download.py).

A preparer's own module only knows its corpus layout; it hands utterances (id, speaker, audio
path, words) to `write_sets` and a lexicon to `write_dict_dir`.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from tqdm import tqdm

from asr_kd.data.audio import audio_info
from asr_kd.data.datadir import DataDir, c_order, write_datadir
from asr_kd.errors import AsrKdError
from asr_kd.io import write_text

log = logging.getLogger(__name__)

UNK_WORD, UNK_PHONE = "<UNK>", "SPN"


@dataclass(frozen=True)
class Utterance:
    utt_id: str
    speaker: str
    audio: Path
    words: tuple[str, ...]
    source: str = ""  # where the transcript came from ("file:line"), for error messages


# ---------------------------------------------------------------- lexicon / dict dir

Lexicon = list[tuple[str, tuple[str, ...]]]  # (word, phones), one entry per pronunciation


def check_oov(utterances: Iterable[Utterance], lexicon: Lexicon, map_to_unk: bool) -> list[Utterance]:
    """Refuse (or map to <UNK>) words the lexicon lacks; the error names the utterance and word."""
    known = {word for word, _ in lexicon}
    checked, mapped = [], 0
    for utt in utterances:
        oov = [w for w in utt.words if w not in known]
        if oov and not map_to_unk:
            where = f"{utt.source}: " if utt.source else ""
            raise AsrKdError(f"{where}utterance '{utt.utt_id}': word '{oov[0]}' is not in the lexicon "
                             f"(add it, or map unknown words to {UNK_WORD} with --map-oov)")
        mapped += len(oov)
        words = tuple(w if w in known else UNK_WORD for w in utt.words)
        checked.append(Utterance(utt.utt_id, utt.speaker, utt.audio, words, utt.source))
    if mapped:
        log.warning("mapped %d out-of-lexicon word tokens to %s", mapped, UNK_WORD)
    return checked


def phone_groups(phones: Iterable[str]) -> list[list[str]]:
    """Kaldi's nonsilence_phones.txt rows: stress/tone variants (AH0 AH1 AH2) share a row."""
    groups: dict[str, list[str]] = {}
    for phone in sorted(set(phones), key=c_order):
        groups.setdefault(re.sub(r"\d+$", "", phone), []).append(phone)
    return [groups[base] for base in sorted(groups, key=c_order)]


def write_dict_dir(dict_dir: str | Path, lexicon: Lexicon, silence_phones: Sequence[str],
                   optional_silence: str, silence_words: dict[str, str]) -> None:
    """Kaldi dict dir: lexicon.txt (+ silence words), {nonsilence,silence,optional_silence}_phones.txt."""
    dict_dir = Path(dict_dir)
    entries = dedupe([(w, (p,)) for w, p in silence_words.items()] + list(lexicon))
    entries.sort(key=lambda e: c_order(e[0]))  # stable: a word's pronunciations keep their order
    nonsilence = {p for _, phones in lexicon for p in phones} - set(silence_phones)
    write_text(dict_dir / "lexicon.txt", "".join(f"{w} {' '.join(p)}\n" for w, p in entries))
    write_text(dict_dir / "nonsilence_phones.txt", "".join(" ".join(g) + "\n" for g in phone_groups(nonsilence)))
    write_text(dict_dir / "silence_phones.txt", "".join(f"{p}\n" for p in silence_phones))
    write_text(dict_dir / "optional_silence.txt", f"{optional_silence}\n")
    log.info("%s: %d lexicon entries, %d nonsilence phones", dict_dir, len(entries), len(nonsilence))


def dedupe(entries: Iterable[tuple[str, tuple[str, ...]]]) -> list[tuple[str, tuple[str, ...]]]:
    """Drop repeated (word, pronunciation) pairs, keeping the first order otherwise."""
    seen, kept = set(), []
    for entry in entries:
        if entry not in seen:
            seen.add(entry)
            kept.append(entry)
    return kept


def add_unk(lexicon: Lexicon, silence_phones: list[str]) -> tuple[Lexicon, list[str]]:
    """The <UNK> SPN entry (spoken noise), added only when OOV mapping is asked for."""
    return lexicon + [(UNK_WORD, (UNK_PHONE,))], silence_phones + [UNK_PHONE]


# ---------------------------------------------------------------- data dirs

def write_sets(out: str | Path, sets: dict[str, list[Utterance]], disjoint_speakers: bool = True
               ) -> dict[str, DataDir]:
    """Write one data dir per set (with utt2dur from the file headers); speakers must not be shared."""
    if disjoint_speakers:
        check_disjoint_speakers(sets)
    written = {}
    for name, utts in sets.items():
        if not utts:
            raise AsrKdError(f"set '{name}' would be empty; is the corpus complete?")
        durations = {u.utt_id: audio_info(u.audio, u.utt_id).duration
                     for u in tqdm(utts, desc=f"{name}: reading headers", disable=len(utts) < 2000)}
        written[name] = write_datadir(
            Path(out) / name,
            wav_scp={u.utt_id: str(u.audio.resolve()) for u in utts},
            utt2spk={u.utt_id: u.speaker for u in utts},
            text={u.utt_id: " ".join(u.words) for u in utts},
            utt2dur=durations)
    return written


def check_disjoint_speakers(sets: dict[str, list[Utterance]]) -> None:
    owner: dict[str, str] = {}
    for name, utts in sets.items():
        for spk in {u.speaker for u in utts}:
            if spk in owner and owner[spk] != name:
                raise AsrKdError(f"speaker '{spk}' is in both '{owner[spk]}' and '{name}'")
            owner[spk] = name


def summary(sets: dict[str, DataDir]) -> str:
    """One line per set: utterances, speakers, hours (the counts a recipe's README quotes)."""
    lines = []
    for name, data in sets.items():
        hours = sum(data.utt2dur.values()) / 3600 if data.utt2dur else float("nan")
        lines.append(f"{name}: {len(data)} utterances, {len(data.speakers)} speakers, {hours:.2f} hours "
                     f"-> {data.path}")
    return "\n".join(lines)


# ---------------------------------------------------------------- command line

def corpus_cli(description: str, add_prepare_args: Callable[[argparse.ArgumentParser], None],
               prepare: Callable[[argparse.Namespace], dict[str, DataDir]],
               add_download_args: Callable[[argparse.ArgumentParser], None],
               download_corpus: Callable[[argparse.Namespace], None],
               argv: list[str] | None = None) -> int:
    """`python -m data_prep.<corpus> prepare ...` / `download ...`; an AsrKdError prints and exits 1."""
    parser = argparse.ArgumentParser(description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    add_prepare_args(sub.add_parser("prepare", help="corpus dir -> data dirs + dict dir"))
    add_download_args(sub.add_parser("download", help="fetch and unpack the corpus"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "prepare":
            print(summary(prepare(args)))
        else:
            download_corpus(args)
    except AsrKdError as e:
        print(f"{parser.prog} {args.command}: error: {e}", file=sys.stderr)
        return 1
    return 0
