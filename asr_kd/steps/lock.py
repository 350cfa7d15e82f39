"""One writer per output: a lock file holding the holder's PID, start time and command.

`OutputLock(path)` creates the file with O_CREAT | O_EXCL (atomic on local filesystems). A second
writer is refused with the holder's PID and command; a lock whose process is gone (or whose PID now
belongs to another process: the start time in /proc differs) is taken over with a warning. The
takeover renames the stale file away first, so two processes that both find it stale cannot both
win. Kaldi has no such lock (its recipes trust the user); fcntl/flock locks vanish with their
process and cannot tell the next writer who held them, hence this small file format.

`die_with_parent()`: a child of a recipe asks the kernel for SIGTERM when its parent dies
(Linux prctl PR_SET_PDEATHSIG), because `kill -9` of run.sh runs no trap and would leave the
`asr_kd` child running and writing into the exp dir. Opt-in through ASR_KD_PARENT_PID (the recipe
sets it): a command started by hand from a shell that later exits must keep running.
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from asr_kd.errors import AsrKdError

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1


def lock_path_of(out: str | Path) -> Path:
    """The lock of an output: a hidden sibling `.<name>.lock` (the output itself may be replaced by a rename)."""
    out = Path(out)
    return out.parent / f".{out.name}.lock"


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat); None if gone.

    A zombie (killed, not yet reaped: common in containers whose PID 1 reaps late) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def is_alive(holder: dict) -> bool:
    pid = int(holder.get("pid", 0))
    if pid <= 0 or holder.get("host", socket.gethostname()) != socket.gethostname():
        return pid > 0  # another host's lock: cannot check, assume alive
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not Path(f"/proc/{pid}").exists():
        return True  # no /proc (not Linux): the signal check above is all there is
    start = process_start(pid)
    return start is not None and holder.get("start") in (None, start)


def describe(holder: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    return f"PID {holder.get('pid')} ({holder.get('command', '?')}), since {since}"


class OutputLock:
    """`with OutputLock(path, what): ...` - hold `path` as the single writer of `what`."""

    def __init__(self, path: str | Path, what: str, *, pid: int | None = None, command: str | None = None):
        self.path, self.what = Path(path), what
        self.pid = pid or os.getpid()
        self.command = command or " ".join(sys.argv)

    def acquire(self) -> "OutputLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {"pid": self.pid, "start": process_start(self.pid), "host": socket.gethostname(),
                  "command": self.command, "since": time.time()}
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._read()
                if holder is None:
                    continue  # removed meanwhile: try again
                if holder.get("pid") == self.pid and holder.get("start") == record["start"]:
                    return self  # ours already (a recipe re-taking its own lock)
                if is_alive(holder):
                    raise AsrKdError(f"{self.what} is in use by {describe(holder)} (lock {self.path}); wait for it "
                                     f"to finish or stop it, then re-run") from None
                self._take_over(holder)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(record, f)
            return self
        raise AsrKdError(f"{self.path}: could not take the lock of {self.what} (it keeps changing); re-run")

    def _read(self) -> dict | None:
        try:
            return json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"pid": 0, "command": "unreadable lock file"}

    def _take_over(self, holder: dict) -> None:
        stale = self.path.with_name(f"{self.path.name}.stale-{self.pid}")
        try:
            os.replace(self.path, stale)
        except FileNotFoundError:
            return  # another process took it over first; the retry sees its lock
        stale.unlink(missing_ok=True)
        log.warning("taking over the lock of %s left by %s, which is no longer running (%s)",
                    self.what, describe(holder), self.path)

    def release(self) -> None:
        holder = self._read()
        if holder is not None and holder.get("pid") == self.pid:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def die_with_parent() -> None:
    """With ASR_KD_PARENT_PID set (by a recipe): end this process when that parent dies (see module doc)."""
    parent = os.environ.pop("ASR_KD_PARENT_PID", None)  # popped: our own children are not its children
    if not parent or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # the parent died before prctl took effect
        raise SystemExit(f"asr-kd: parent process {parent} has exited; stopping")


def exit_on_sigterm() -> None:
    """SIGTERM raises SystemExit, so `finally` blocks run: locks are released, temp dirs removed."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():  # signal handlers can only be set there
        signal.signal(signal.SIGTERM, handler)
