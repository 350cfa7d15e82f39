"""Recipe markers and the exp-dir lock, for recipes/utils/hybrid_kd.sh (`python -m asr_kd.steps ...`).

A marker `exp/.done/<step>` exists only for a finished step: JSON {"fingerprint", "finished",
"seconds"}; `<marker>.started` holds the fingerprint of a step that began (a killed one resumes
only with the same fingerprint). The fingerprint of a recipe step is its command line plus the
identity (`identity.path_identity`) of every argument that is an existing path, except the step's
outputs: OUT of `fresh_step`, the command's last argument and the value of `--out` (every asr-kd
command names its output so), and paths given as `--derived` (made inside the same group of steps,
covered by the `--extra` inputs instead). `--nj` and `--dask-scheduler` with their values are left
out: they do not change what a step writes. A finished step whose output is gone (another step
removed the dir it lived in) is redone. `--alias exp=DIR` writes paths under DIR as `{exp}/...`, so a
copied or moved exp dir run with its new --exp/--data keeps its markers.

    check MARKER [--out P] [--derived P] [--extra P] [--alias N=DIR] -- CMD...
                                        prints done | run | redo: <what changed>
    begin ... (same)                    check, then record the fingerprint in MARKER.started
    finish MARKER SECONDS               the step finished: MARKER.started -> MARKER
    lock FILE --pid PID [--what TEXT]   take the exp dir's lock for PID (run.sh)
    unlock FILE --pid PID

A marker left by an older recipe (a bare duration) has no fingerprint: the step is redone.
Errors print one line and exit 1.
"""
from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path

from asr_kd.errors import AsrKdError
from asr_kd.io import write_json
from asr_kd.steps.identity import changes, fingerprint
from asr_kd.steps.lock import OutputLock


NOT_RESULT = ("--nj", "--dask-scheduler")  # where a step runs, not what it writes (the bytes do not depend on it)


def step_fingerprint(cmd: list[str], outputs: list[str], derived: list[str], extra: list[str],
                     aliases: dict[str, str] | None = None) -> dict:
    skip = {str(Path(p).resolve()) for p in [*outputs, *derived, cmd[-1]] if p}
    for i, arg in enumerate(cmd[:-1]):
        if arg == "--out":
            skip.add(str(Path(cmd[i + 1]).resolve()))
    paths = [a for a in [*cmd, *extra] if a and not a.startswith("-") and Path(a).exists()
             and str(Path(a).resolve()) not in skip]
    argv = [_alias(a, aliases) for i, a in enumerate(cmd) if a not in NOT_RESULT and (i == 0 or cmd[i - 1] not in NOT_RESULT)]
    fp = fingerprint("recipe step", options={"argv": argv},
                     inputs={_alias(p, aliases): p for p in dict.fromkeys(paths)})
    for entries in fp["inputs"].values():
        for entry in entries:
            entry["path"] = _alias(entry["path"], aliases)
    return fp


def step_outputs(cmd: list[str], outputs: list[str]) -> list[str]:
    """What a step writes: its OUT, the value of `--out`, else its last argument when that is a path."""
    found = list(outputs) + [cmd[i + 1] for i, arg in enumerate(cmd[:-1]) if arg == "--out"]
    return found or ([cmd[-1]] if "/" in cmd[-1] else [])


def _alias(token: str, aliases: dict[str, str] | None) -> str:
    """`token` with a leading alias dir (longest first) written as {name}."""
    for name, root in sorted((aliases or {}).items(), key=lambda item: -len(item[1])):
        for form in dict.fromkeys([root.rstrip("/"), str(Path(root).resolve())]):
            if token == form or token.startswith(form + "/"):
                return "{" + name + "}" + token[len(form):]
    return token


def read_marker(marker: Path) -> dict | None:
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None  # an old marker holds a bare number


def started_of(marker: Path) -> Path:
    return marker.with_name(marker.name + ".started")


def state_of(marker: Path, fp: dict, outputs: list[str] = ()) -> str:
    if not marker.exists():
        started = read_marker(started_of(marker))
        if started is None:
            return "run"
        marker = started_of(marker)  # a step that began and did not finish: resume it only if it is the same
    record = read_marker(marker)
    if record is None:
        return "redo: its marker predates step fingerprints"
    old = record.get("fingerprint", {})
    diff = _argv_diff(old.get("options", {}).get("argv", []), fp["options"]["argv"])
    diff += [c for c in changes(old, fp) if not c.startswith("options argv")]
    missing = [p for p in outputs if not Path(p).exists()]
    if not diff and record.get("finished") and missing:
        return f"redo: its output {missing[0]} is gone"
    if not diff:
        return "done" if record.get("finished") else "run"
    return "redo: " + "; ".join(diff)


def _argv_diff(old: list[str], new: list[str]) -> list[str]:
    if old == new:
        return []
    removed, added = [], []
    for op in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        tag, i1, i2, j1, j2 = op
        if tag != "equal":
            removed += old[i1:i2]
            added += new[j1:j2]
    return [f"command line changed: {' '.join(removed) or '(nothing)'} -> {' '.join(added) or '(nothing)'}"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    cmd = argv[argv.index("--") + 1:] if "--" in argv else []  # the step's command: never parsed as options
    args = _parser().parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    args.cmd = cmd
    try:
        args.run(args)
    except AsrKdError as e:
        print(f"asr_kd.steps {args.action}: error: {e}", file=sys.stderr)
        return 1
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m asr_kd.steps", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="action", required=True)
    for name, run in (("check", _check), ("begin", _begin)):
        s = sub.add_parser(name)
        s.add_argument("marker", type=Path)
        s.add_argument("--out", action="append", default=[], help="an output of the step (not an input)")
        s.add_argument("--derived", action="append", default=[], help="made earlier in the same group (not hashed)")
        s.add_argument("--extra", action="append", default=[], help="an input not on the command line")
        s.add_argument("--alias", action="append", default=[], metavar="NAME=DIR", help="write DIR/... as {NAME}/...")
        s.set_defaults(run=run)
    s = sub.add_parser("finish")
    s.add_argument("marker", type=Path)
    s.add_argument("seconds", type=int)
    s.set_defaults(run=_finish)
    for name, run in (("lock", _lock), ("unlock", _unlock)):
        s = sub.add_parser(name)
        s.add_argument("file", type=Path)
        s.add_argument("--pid", type=int, required=True)
        s.add_argument("--what", default="exp dir")
        s.set_defaults(run=run)
    return p


def _fp(args) -> dict:
    cmd = args.cmd
    if not cmd:
        raise AsrKdError("no command given after --")
    aliases = dict(item.split("=", 1) for item in args.alias if "=" in item and item.split("=", 1)[1])
    return step_fingerprint(cmd, args.out, args.derived, args.extra, aliases)


def _state(args, fp: dict) -> str:
    return state_of(args.marker, fp, step_outputs(args.cmd, args.out))


def _check(args) -> None:
    print(_state(args, _fp(args)))


def _begin(args) -> None:
    fp = _fp(args)
    state = _state(args, fp)
    if state != "done":
        args.marker.unlink(missing_ok=True)  # a replaced step has no finished marker until it finishes again
        write_json(started_of(args.marker), {"fingerprint": fp, "finished": False})
    print(state)


def _finish(args) -> None:
    record = read_marker(started_of(args.marker))
    if record is None:
        raise AsrKdError(f"{started_of(args.marker)}: no record of the step's start to finish")
    write_json(args.marker, {**record, "finished": True, "seconds": args.seconds})
    started_of(args.marker).unlink()


def _command_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return f"process {pid}"


def _lock(args) -> None:
    OutputLock(args.file, f"{args.what} {args.file.parent}", pid=args.pid, command=_command_of(args.pid)).acquire()


def _unlock(args) -> None:
    OutputLock(args.file, args.what, pid=args.pid).release()
