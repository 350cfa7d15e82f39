"""Claim an output for one step: lock it, then skip, resume, refuse or replace by fingerprint.

    with claim_output(out, fp, overwrite=args.overwrite) as claim:
        if claim.done:
            return
        ...                      # write the output (resuming from what a killed run left)

`out/step.json` holds {"fingerprint", "finished"}. It is written (finished false) before the step
starts, so a killed run's leftovers are known to belong to it; and (finished true) when it ends.
An existing output whose record has another fingerprint is refused with the list of what changed
(`identity.changes`), or with `overwrite` removed together with its partial work (`<out>.shards`,
`.<name>.partial`) before the step runs, so old and new outputs never mix. A non-empty output
without a record (made before step records existed, or by hand) is refused the same way.

A recipe redoing a step whose fingerprint changed sets ASR_KD_OVERWRITE=1 (= `--overwrite`).
Only one process writes an output at a time (`lock.OutputLock` on `.<name>.lock` beside it).
Under torchrun only rank 0 locks and writes the record; other ranks read it.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from asr_kd.errors import AsrKdError
from asr_kd.io import read_json, write_json
from asr_kd.steps.identity import STEP_FILE, changes, fingerprint
from asr_kd.steps.lock import OutputLock, lock_path_of

# argparse attributes that never change what a command writes (or are covered by the resolved config)
NOT_OPTIONS = {"func", "command", "verbose", "overwrite", "nj", "dask_scheduler", "config", "set",
               "unavailable", "commands", "max_resident_frames"}


@dataclass
class Claim:
    out: Path
    state: str  # "new" | "resume" | "done"
    fingerprint: dict

    @property
    def done(self) -> bool:
        return self.state == "done"


def add_step_args(p) -> None:
    """`--overwrite` on every command that claims an output."""
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output made with other inputs or options (default: refuse)")


def command_fingerprint(args, *, inputs: Sequence[str], output: str, config: dict | None = None) -> dict:
    """Fingerprint of a CLI command: its resolved config, other options and the identities of `inputs`."""
    values = vars(args)
    options = {k: v for k, v in values.items()
               if k not in NOT_OPTIONS and k not in inputs and k != output and not callable(v)}
    return fingerprint(args.command, config=config, options=options, inputs={k: values.get(k) for k in inputs})


@contextlib.contextmanager
def step_output(args, output: str, inputs: Sequence[str], config: dict | None = None, *,
                replaced_whole: bool = False) -> Iterator[Claim]:
    """`claim_output` for a CLI command whose output path is `args.<output>`."""
    fp = command_fingerprint(args, inputs=inputs, output=output, config=config)
    overwrite = getattr(args, "overwrite", False) or os.environ.get("ASR_KD_OVERWRITE") == "1"
    with claim_output(getattr(args, output), fp, overwrite=overwrite, what=f"{args.command} output",
                      replaced_whole=replaced_whole) as claim:
        yield claim


@contextlib.contextmanager
def claim_output(out: str | Path, fp: dict, *, overwrite: bool = False, what: str = "output",
                 replaced_whole: bool = False) -> Iterator[Claim]:
    """`replaced_whole`: the step writes a new output beside the old one and renames it over it when
    done (stores): on --overwrite the old output then stays until the new one lands, so a re-run that
    fails (full disk, bad input) loses nothing; only the partial work of killed runs is removed first."""
    out = Path(out)
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 decides, locks and writes the record
        record = read_record(out)
        same = record is not None and not changes(record.get("fingerprint", {}), fp)
        yield Claim(out, "done" if same and record.get("finished") else "resume", fp)
        return
    with OutputLock(lock_path_of(out), f"{what} {out}"):
        claim = Claim(out, _decide(out, fp, overwrite, replaced_whole), fp)
        if claim.done:
            print(f"{out}: already done with the same inputs and options (see {out / STEP_FILE}); nothing to do "
                  f"(--overwrite redoes it)")
            yield claim
            return
        if claim.state == "new" and not (replaced_whole and _has_content(out)):  # an old output stays untouched
            _write_record(out, fp, finished=False)
        try:
            yield claim
        except BaseException:
            if claim.state == "new":
                _drop_empty(out)  # a step that failed before writing anything leaves nothing behind
            raise
        _write_record(out, fp, finished=True)


def _decide(out: Path, fp: dict, overwrite: bool, replaced_whole: bool = False) -> str:
    record = read_record(out)
    same = record is not None and not changes(record.get("fingerprint", {}), fp)
    if same and not overwrite:
        return "done" if record.get("finished") else "resume"
    if not _has_content(out):
        return "new"
    if record is None:
        why = f"{out} holds files but no step record ({STEP_FILE}: made by an older asr_kd or by hand)"
    elif same:
        why = f"{out} was made by the same step"
    else:
        why = f"{out} was made by another step: " + "; ".join(changes(record.get("fingerprint", {}), fp))
    if not overwrite:
        raise AsrKdError(f"{why}; pass --overwrite to replace it, or choose another output")
    print(f"{out}: replacing it (--overwrite): {why}")
    remove_output(out, keep_output=replaced_whole)
    return "new"


def read_record(out: Path) -> dict | None:
    file = Path(out) / STEP_FILE
    if not file.is_file():
        return None
    try:
        return read_json(file)
    except ValueError as e:
        raise AsrKdError(f"{file}: unreadable step record ({e}); pass --overwrite to replace the output") from None


def _has_content(out: Path) -> bool:
    if out.is_file():
        return True
    return out.is_dir() and any(p.name != STEP_FILE for p in out.iterdir())


def remove_output(out: Path, keep_output: bool = False) -> None:
    """Remove an output (unless `keep_output`) and the partial work a killed run of it left (so
    nothing old is resumed)."""
    paths = [out.with_name(out.name + ".shards"), out.with_name(f".{out.name}.partial")]
    for path in paths if keep_output else [out, *paths]:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _drop_empty(out: Path) -> None:
    if out.is_dir() and not _has_content(out):
        (out / STEP_FILE).unlink(missing_ok=True)
        out.rmdir()


def _write_record(out: Path, fp: dict, finished: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / STEP_FILE, {"fingerprint": fp, "finished": finished, "time": time.time()})
