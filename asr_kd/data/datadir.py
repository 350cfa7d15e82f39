"""Kaldi data dirs: `wav.scp`, `text`, `utt2spk`, `spk2utt`, optional `segments` and `utt2dur`.

Each table is `key value...` per line, UTF-8, keys unique and sorted in C-locale byte order (what
Kaldi's `sort` with LC_ALL=C gives), and the utterance tables share one key set. Kaldi also needs
utterances sorted by id to come out grouped by speaker (spk2utt expanded must equal utt2spk);
the usual way to get that is to start every utterance id with its speaker id.

Every reader checks all of this and names the file and line of the first problem, so a bad
corpus fails at `prepare`, not three stages later inside the aligner.
"""
from __future__ import annotations

import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from asr_kd.errors import AsrKdError
from asr_kd.io import atomic_path, decode_line, write_text

log = logging.getLogger(__name__)

FIX_HINT = "(`asr-kd fix-data-dir DIR` sorts tables and keeps the utterances present in all)"
UTF8_BOM = b"\xef\xbb\xbf"
BACKUP_DIR = ".backup"  # fix-data-dir copies the tables here before rewriting them (Kaldi's fix_data_dir.sh)


def c_order(key: str) -> bytes:
    """Sort key giving Kaldi's order: C-locale byte order of the UTF-8 encoding."""
    return key.encode("utf-8")


# ---------------------------------------------------------------- single tables

@dataclass
class Entry:
    line: int
    key: str
    value: str


def read_entries(path: str | os.PathLike, *, strict: bool = True) -> list[Entry]:
    """Lines of a table as (line number, key, rest). strict: also refuse duplicate and unsorted keys."""
    path = Path(path)
    if not path.is_file():
        raise AsrKdError(f"{path}: file not found")
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if number == 1 and raw.startswith(UTF8_BOM):
            if strict:
                raise AsrKdError(f"{path}:1: starts with a UTF-8 byte order mark (BOM, bytes EF BB BF), which Kaldi "
                                 f"reads as part of the first key; remove it {FIX_HINT}")
            log.warning("%s: removed a UTF-8 byte order mark (BOM) at the start", path)
            raw = raw[len(UTF8_BOM):]
        if not raw:
            continue  # the final newline (or a blank line) carries no entry
        line = decode_line(raw, path, number)
        if "\r" in line:
            raise AsrKdError(f"{path}:{number}: Windows line ending (\\r); convert the file with dos2unix")
        parts = line.strip().split(maxsplit=1)
        if not parts:
            raise AsrKdError(f"{path}:{number}: line has only whitespace")
        entry = Entry(number, parts[0], parts[1].strip() if len(parts) > 1 else "")
        if strict:
            check_new_key(path, entry, seen, entries[-1] if entries else None)
        seen.setdefault(entry.key, number)
        entries.append(entry)
    return entries


def check_new_key(path: Path, entry: Entry, seen: dict[str, int], previous: Entry | None) -> None:
    if entry.key in seen:
        raise AsrKdError(f"{path}:{entry.line}: duplicate {key_noun(path)} '{entry.key}' "
                         f"(first on line {seen[entry.key]})")
    if previous is not None and c_order(entry.key) < c_order(previous.key):
        raise AsrKdError(f"{path}:{entry.line}: {key_noun(path)} '{entry.key}' is out of order "
                         f"(after '{previous.key}'); Kaldi tables are sorted in C-locale byte order {FIX_HINT}")


def key_noun(path: Path) -> str:
    """What a table's keys are, for messages."""
    if path.name in ("text", "utt2spk", "segments", "utt2dur", "feats.scp", "cmvn.scp"):
        return "utterance id"
    return {"spk2utt": "speaker id", "wav.scp": "recording/utterance id"}.get(path.name, "key")


def read_table(path: str | os.PathLike, *, allow_empty: bool = False) -> dict[str, str]:
    """A validated table as key -> rest of the line (insertion order = sorted order)."""
    table = {}
    for entry in read_entries(path):
        if not entry.value and not allow_empty:
            raise AsrKdError(f"{path}:{entry.line}: no value after key '{entry.key}'")
        table[entry.key] = entry.value
    return table


def format_table(mapping: Mapping[str, object]) -> str:
    """Table text in Kaldi order; list values are joined by spaces, floats written compactly."""
    lines = []
    for key in sorted(mapping, key=c_order):
        value = mapping[key]
        if isinstance(value, (list, tuple)):
            value = " ".join(map(str, value))
        elif isinstance(value, Segment):
            value = value.format()
        elif isinstance(value, float):
            value = format_seconds(value)
        lines.append(f"{key} {value}".rstrip() + "\n")
    return "".join(lines)


def write_table(path: str | os.PathLike, mapping: Mapping[str, object]) -> None:
    """Write a table atomically, sorted in Kaldi order."""
    write_text(path, format_table(mapping))


def format_seconds(seconds: float) -> str:
    return f"{seconds:.4f}".rstrip("0").rstrip(".") if seconds != -1 else "-1"


# ---------------------------------------------------------------- the data dir

@dataclass(frozen=True)
class Segment:
    """Part of a recording: `end == -1` means up to the end of the recording (Kaldi's convention)."""
    recording: str
    start: float
    end: float

    def format(self) -> str:
        return f"{self.recording} {format_seconds(self.start)} {format_seconds(self.end)}"


@dataclass
class DataDir:
    path: Path
    wav_scp: dict[str, str]             # utterance id (or recording id with segments) -> path | command|
    utt2spk: dict[str, str]
    spk2utt: dict[str, list[str]]
    text: dict[str, str] | None = None  # None: an unlabelled set
    segments: dict[str, Segment] | None = None
    utt2dur: dict[str, float] | None = None

    @property
    def utt_ids(self) -> list[str]:
        return list(self.utt2spk)  # already in Kaldi order

    @property
    def speakers(self) -> list[str]:
        return list(self.spk2utt)

    def __len__(self) -> int:
        return len(self.utt2spk)

    def recording_of(self, utt: str) -> str:
        return self.segments[utt].recording if self.segments is not None else utt


def load_datadir(path: str | os.PathLike) -> DataDir:
    """Read and validate a data dir; any problem raises AsrKdError naming the file and line."""
    path = Path(path)
    if not path.is_dir():
        raise AsrKdError(f"{path}: data dir not found")
    utt2spk = read_table(path / "utt2spk")
    check_speaker_order(path / "utt2spk", utt2spk)
    data = DataDir(path, read_table(path / "wav.scp"), utt2spk, spk2utt_from_utt2spk(utt2spk))
    if (path / "text").exists():
        data.text = read_text(path / "text")
    if (path / "segments").exists():
        data.segments = read_segments(path / "segments")
    if (path / "utt2dur").exists():
        data.utt2dur = read_utt2dur(path / "utt2dur")
    check_key_sets(data)
    if (path / "spk2utt").exists():
        check_spk2utt(path / "spk2utt", data.spk2utt)
    return data


def validate_datadir(path: str | os.PathLike) -> DataDir:
    """Same as load_datadir; the name says why a caller runs it."""
    return load_datadir(path)


def read_text(path: Path) -> dict[str, str]:
    text = {}
    for entry in read_entries(path):
        if not entry.value:
            raise AsrKdError(f"{path}:{entry.line}: empty transcript for utterance '{entry.key}'")
        text[entry.key] = " ".join(entry.value.split())
    return text


def read_segments(path: Path) -> dict[str, Segment]:
    segments = {}
    for entry in read_entries(path):
        fields = entry.value.split()
        try:
            if len(fields) != 3:
                raise ValueError(f"{len(fields) + 1} fields")
            seg = Segment(fields[0], float(fields[1]), float(fields[2]))
        except ValueError:
            raise AsrKdError(f"{path}:{entry.line}: expected '<utt> <recording> <start> <end>' "
                             f"for utterance '{entry.key}'") from None
        if seg.start < 0 or (seg.end != -1 and seg.end <= seg.start):
            raise AsrKdError(f"{path}:{entry.line}: bad times {seg.start}..{seg.end} for utterance '{entry.key}'")
        segments[entry.key] = seg
    return segments


def read_utt2dur(path: Path) -> dict[str, float]:
    durations = {}
    for entry in read_entries(path):
        try:
            durations[entry.key] = float(entry.value)
        except ValueError:
            raise AsrKdError(f"{path}:{entry.line}: duration '{entry.value}' of utterance '{entry.key}' "
                             "is not a number") from None
    return durations


def spk2utt_from_utt2spk(utt2spk: Mapping[str, str]) -> dict[str, list[str]]:
    spk2utt: dict[str, list[str]] = {}
    for utt in sorted(utt2spk, key=c_order):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    return {spk: spk2utt[spk] for spk in sorted(spk2utt, key=c_order)}


def check_speaker_order(path: Path, utt2spk: Mapping[str, str]) -> None:
    """Kaldi's rule: utterances in sorted order must come grouped by speaker, speakers sorted too."""
    previous_utt = None
    for line, utt in enumerate(utt2spk, start=1):
        if previous_utt is not None and c_order(utt2spk[utt]) < c_order(utt2spk[previous_utt]):
            raise AsrKdError(
                f"{path}:{line}: utterance '{utt}' of speaker '{utt2spk[utt]}' sorts after '{previous_utt}' of "
                f"speaker '{utt2spk[previous_utt]}': sorted utterance ids must come grouped by speaker "
                f"(start each utterance id with its speaker id, e.g. '{utt2spk[utt]}-{utt}')")
        previous_utt = utt


def check_spk2utt(path: Path, expected: Mapping[str, list[str]]) -> None:
    entries = read_entries(path)
    for entry in entries:
        if expected.get(entry.key) != entry.value.split():
            raise AsrKdError(f"{path}:{entry.line}: speaker '{entry.key}' disagrees with utt2spk "
                             "(spk2utt must be utt2spk inverted; fix-data-dir regenerates it)")
    if len(entries) != len(expected):
        missing = sorted(set(expected) - {e.key for e in entries}, key=c_order)
        raise AsrKdError(f"{path}: speakers of utt2spk missing here: {missing[:5]}")


def check_key_sets(data: DataDir) -> None:
    """Every utterance table has utt2spk's keys; wav.scp has the (segment) recording ids."""
    utts = set(data.utt2spk)
    tables = {"text": data.text, "segments": data.segments, "utt2dur": data.utt2dur}
    if data.segments is None:
        tables["wav.scp"] = data.wav_scp
    for name, table in tables.items():
        if table is not None:
            compare_keys(data.path / "utt2spk", utts, data.path / name, set(table))
    if data.segments is not None:
        for utt, seg in data.segments.items():
            if seg.recording not in data.wav_scp:
                raise AsrKdError(f"{data.path / 'segments'}: recording '{seg.recording}' of utterance '{utt}' "
                                 f"is not in {data.path / 'wav.scp'}")


def compare_keys(ref_path: Path, ref: set[str], path: Path, keys: set[str]) -> None:
    if keys == ref:
        return
    missing = sorted(ref - keys, key=c_order)
    extra = sorted(keys - ref, key=c_order)
    parts = []
    if missing:
        parts.append(f"{len(missing)} utterance id(s) of {ref_path.name} missing (first: '{missing[0]}')")
    if extra:
        parts.append(f"{len(extra)} not in {ref_path.name} (first: '{extra[0]}')")
    raise AsrKdError(f"{path}: key set differs from {ref_path}: {'; '.join(parts)} {FIX_HINT}")


# ---------------------------------------------------------------- writing and editing

def write_datadir(path: str | os.PathLike, *, wav_scp: Mapping[str, str], utt2spk: Mapping[str, str],
                  text: Mapping[str, str] | None = None, segments: Mapping[str, Segment] | None = None,
                  utt2dur: Mapping[str, float] | None = None) -> DataDir:
    """Write a whole data dir (spk2utt derived) and validate it before it replaces any old one."""
    path = Path(path)
    tables = {"wav.scp": wav_scp, "utt2spk": utt2spk, "spk2utt": spk2utt_from_utt2spk(utt2spk),
              "text": text, "segments": segments, "utt2dur": utt2dur}
    with atomic_path(path, is_dir=True) as tmp:
        for name, table in tables.items():
            if table is not None:
                (tmp / name).write_text(format_table(table), encoding="utf-8")
        try:
            load_datadir(tmp)
        except AsrKdError as e:
            raise AsrKdError(f"refusing to write {path}: {str(e).replace(str(tmp), str(path))}") from None
    return load_datadir(path)


def subset_datadir(src: str | os.PathLike | DataDir, dst: str | os.PathLike, *, utts: Iterable[str] | None = None,
                   speakers: Iterable[str] | None = None, first: int | None = None) -> DataDir:
    """Copy the chosen utterances (by id, by speaker, or the first N in sorted order) to `dst`."""
    data = src if isinstance(src, DataDir) else load_datadir(src)
    if sum(x is not None for x in (utts, speakers, first)) != 1:
        raise AsrKdError("subset: give exactly one of utts, speakers, first")
    if first is not None:
        if first < 1:
            raise AsrKdError(f"subset of {data.path}: --first must be >= 1, got {first}")
        chosen = set(data.utt_ids[:first])
    elif utts is not None:
        chosen = set(utts)
        unknown = sorted(chosen - set(data.utt2spk), key=c_order)
        if unknown:
            raise AsrKdError(f"{data.path}: {len(unknown)} requested utterance(s) not in the data dir "
                             f"(first: '{unknown[0]}')")
    else:
        wanted = set(speakers)
        unknown = sorted(wanted - set(data.spk2utt), key=c_order)
        if unknown:
            raise AsrKdError(f"{data.path}: speaker '{unknown[0]}' not in {data.path / 'spk2utt'}")
        chosen = {u for s in wanted for u in data.spk2utt[s]}
    return write_subset(data, dst, chosen)


def write_subset(data: DataDir, dst: str | os.PathLike, chosen: set[str]) -> DataDir:
    def keep(table):
        return None if table is None else {k: v for k, v in table.items() if k in chosen}
    recordings = {data.recording_of(u) for u in chosen}
    wav_scp = {k: v for k, v in data.wav_scp.items() if k in recordings}
    return write_datadir(dst, wav_scp=wav_scp, utt2spk=keep(data.utt2spk), text=keep(data.text),
                         segments=keep(data.segments), utt2dur=keep(data.utt2dur))


def split_by_speaker(src: str | os.PathLike | DataDir, rest_dst: str | os.PathLike, held_dst: str | os.PathLike,
                     *, fraction: float | None = None, speakers: Iterable[str] | None = None,
                     seed: int = 0) -> tuple[DataDir, DataDir]:
    """Hold out whole speakers: those listed, or a seeded random `fraction` of them (at least one)."""
    data = src if isinstance(src, DataDir) else load_datadir(src)
    if (fraction is None) == (speakers is None):
        raise AsrKdError("split: give exactly one of fraction, speakers")
    if speakers is None:
        if not 0 < fraction < 1:
            raise AsrKdError(f"split: fraction must be in (0, 1), got {fraction}")
        count = max(1, round(fraction * len(data.speakers)))
        speakers = random.Random(seed).sample(data.speakers, count)
    held = subset_datadir(data, held_dst, speakers=speakers)
    rest = write_subset(data, rest_dst, set(data.utt2spk) - set(held.utt2spk))
    return rest, held


# ---------------------------------------------------------------- repair

UTT_TABLES = ("utt2spk", "text", "segments", "utt2dur")


def fix_datadir(path: str | os.PathLike) -> dict[str, list[str]]:
    """Sort tables, drop duplicate keys and empty transcripts, keep utterances present in every table.

    Returns (and logs) what was dropped, per file; duplicates whose values disagree are reported as
    conflicting (the first is kept); spk2utt is regenerated from utt2spk. Like Kaldi's
    fix_data_dir.sh, the tables as they were are first copied to DIR/.backup/ (replacing an older
    backup), so nothing the user wrote is lost.
    """
    path = Path(path)
    if not path.is_dir():
        raise AsrKdError(f"{path}: data dir not found")
    dropped: dict[str, list[str]] = {}
    tables = {name: lenient_table(path / name, dropped) for name in (*UTT_TABLES, "wav.scp")
              if (path / name).exists()}
    for name in ("utt2spk", "wav.scp"):
        if name not in tables:
            raise AsrKdError(f"{path / name}: file not found (cannot fix a data dir without it)")
    if "text" in tables:
        empty = [u for u, words in tables["text"].items() if not words]
        note_dropped(dropped, "text", empty, "empty transcript")
    keep = keys_in_all(tables, dropped)
    backup_tables(path)
    for name in UTT_TABLES:
        if name in tables:
            write_table(path / name, {k: v for k, v in tables[name].items() if k in keep})
    used = {tables["segments"][u].split()[0] for u in keep} if "segments" in tables else keep
    note_dropped(dropped, "wav.scp", [k for k in tables["wav.scp"] if k not in used], "unused recording")
    write_table(path / "wav.scp", {k: v for k, v in tables["wav.scp"].items() if k in used})
    kept_utt2spk = {k: v for k, v in tables["utt2spk"].items() if k in keep}
    write_table(path / "spk2utt", spk2utt_from_utt2spk(kept_utt2spk))
    log.info("%s: kept %d utterances", path, len(keep))
    return dropped


def backup_tables(path: Path) -> Path:
    """Copy every table of the data dir into path/.backup/ (atomically replacing an older backup)."""
    backup = path / BACKUP_DIR
    with atomic_path(backup, is_dir=True) as tmp:
        for name in (*UTT_TABLES, "wav.scp", "spk2utt"):
            if (path / name).is_file():
                shutil.copy2(path / name, tmp / name)
    log.info("%s: tables backed up to %s", path, backup)
    return backup


def lenient_table(path: Path, dropped: dict[str, list[str]]) -> dict[str, str]:
    """A table read without order checks; duplicate keys after the first are dropped (those with
    another value are reported separately as conflicting: the choice of the first is arbitrary)."""
    table: dict[str, str] = {}
    duplicates, conflicting = [], []
    for entry in read_entries(path, strict=False):
        if entry.key not in table:
            table[entry.key] = entry.value
        elif " ".join(entry.value.split()) == " ".join(table[entry.key].split()):
            duplicates.append(entry.key)
        else:
            conflicting.append(entry.key)
            log.warning("%s:%d: '%s' repeated with another value (%r; kept the first, %r)", path, entry.line,
                        entry.key, entry.value, table[entry.key])
    note_dropped(dropped, path.name, duplicates, "duplicate key")
    note_dropped(dropped, f"{path.name} (conflicting duplicates, first kept)", conflicting,
                 "same key with another value")
    return {k: table[k] for k in sorted(table, key=c_order)}


def keys_in_all(tables: dict[str, dict[str, str]], dropped: dict[str, list[str]]) -> set[str]:
    utt_tables = [n for n in UTT_TABLES if n in tables] + ([] if "segments" in tables else ["wav.scp"])
    keep = set.intersection(*(set(tables[n]) for n in utt_tables))
    if "text" in tables:
        keep -= {u for u, words in tables["text"].items() if not words}
    if "segments" in tables:
        keep = {u for u in keep if tables["segments"][u].split()[0] in tables["wav.scp"]}
    for name in utt_tables:
        note_dropped(dropped, name, [k for k in tables[name] if k not in keep], "not in every table")
    return keep


def note_dropped(dropped: dict[str, list[str]], name: str, keys: list[str], why: str) -> None:
    keys = [k for k in keys if k not in dropped.get(name, [])]
    if keys:
        log.warning("%s: dropped %d line(s), %s (first: '%s')", name, len(keys), why, keys[0])
        dropped.setdefault(name, []).extend(keys)
