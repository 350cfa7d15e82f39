"""Atomic writes and small file helpers shared by every stage.

Every artifact is written to a temporary sibling and renamed into place, so a kill or an
error never leaves a half-written file or directory where a finished one is expected.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Iterator

from asr_kd.errors import AsrKdError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it over `path`, else delete it."""
    path = Path(path)
    tmp = make_temp_dir(path)
    target = tmp if is_dir else tmp / path.name
    try:
        yield target
        if is_dir:
            replace_dir(tmp, path)
        else:
            os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(new: Path, path: Path) -> None:
    """Move directory `new` to `path`, replacing any old one (old moved aside first, then deleted)."""
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}@{_host()}")
        os.replace(path, old)
        os.replace(new, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, path)


def make_temp_dir(path: str | os.PathLike) -> Path:
    """A fresh temporary directory next to `path` (same filesystem, so the final rename is atomic).

    Its name carries the writer's PID and host (`.NAME.PID@HOST.XXXX.tmp`), so the next writer of the
    same `path` removes those a killed writer left (see `remove_stale_temps`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}@{_host()}.", suffix=".tmp", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes 0700; a published dir should get the usual mode
    return tmp


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname().split(".")[0]) or "localhost"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary siblings of `path` (`.NAME.PID@HOST.*.tmp`, `.NAME.old-PID@HOST`) whose
    writer was on this host and is dead: what a killed run leaves. Only our own naming pattern, only
    dead writers, so a concurrent live writer's temp dir and unrelated hidden files are never touched."""
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(?:old-)?(\d+)@{re.escape(_host())}(?:\..*\.tmp)?$")
    removed = []
    if not path.parent.is_dir():
        return removed
    for entry in path.parent.iterdir():
        match = pattern.match(entry.name)
        if match and not _pid_alive(int(match[1])):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            removed.append(entry)
    if removed:
        log.info("%s: removed %d temporary dir(s) left by killed runs (e.g. %s)", path, len(removed), removed[0].name)
    return removed


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj) -> None:
    """Write JSON (indented, keys sorted) atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_lines(path: str | os.PathLike) -> list[tuple[int, str]]:
    """(line number, text) of a UTF-8 text file; a missing file, a directory or a line that is not
    UTF-8 raises AsrKdError naming the file and line (Python's own error names neither)."""
    path = Path(path)
    if path.is_dir():
        raise AsrKdError(f"{path}: is a directory, expected a text file")
    if not path.is_file():
        raise AsrKdError(f"{path}: file not found")
    lines = path.read_bytes().split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # the final newline ends the last line, as in str.splitlines
    return [(number, decode_line(raw, path, number).rstrip("\r")) for number, raw in enumerate(lines, 1)]


def decode_line(raw: bytes, path: Path, number: int) -> str:
    """One line's bytes as UTF-8 text, or AsrKdError naming the file, line and byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AsrKdError(f"{path}:{number}: not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})") from None


def read_json(path: str | os.PathLike) -> dict:
    """A JSON file; a missing, truncated, corrupt or non-UTF-8 one raises AsrKdError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise AsrKdError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AsrKdError(f"{path}: corrupt JSON ({e}); re-run the step that wrote it") from None


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full_message(e: OSError) -> str | None:
    """One line for a write that failed because the disk (or quota) is full; None for other errors."""
    if e.errno not in DISK_FULL:
        return None
    where = f" writing {e.filename}" if e.filename else ""
    return (f"no space left on device{where}; free some space (or point the output elsewhere) and re-run: "
            "outputs already written are intact (every artifact is written to a temp dir and renamed)")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file: the checksum stored in meta.json to tie artifacts to models."""
    return hash_file(path, "sha256")


def hash_file(path: str | os.PathLike, algorithm: str, chunk: int = 1 << 20) -> str:
    """Hex digest of a file with any hashlib algorithm (downloads are checked against md5 or sha256)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj) -> str:
    """Stable short hash of a JSON-able object (configs): 16 hex chars."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]
