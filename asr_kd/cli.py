"""The `asr-kd` command (also `python -m asr_kd`). Subcommands are thin wrappers of library functions.

Each pipeline stage has a `commands.py` with `register(subparsers)`; COMMAND_MODULES is the
explicit table of them (no import side effects). An AsrKdError prints its message and exits 1.

A command module whose third-party package is missing is skipped, not fatal: a GPU machine with
only torch, numpy, pyyaml and tqdm (DESIGN.md §8) runs train / distill / eval-frames although the
audio and Kaldi stages cannot import there. Asking for a command it would have given names the
missing package in one line. A write that fails for a full disk (ENOSPC) is one line too.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from asr_kd.errors import AsrKdError
from asr_kd.io import disk_full_message
from asr_kd.steps.lock import die_with_parent, exit_on_sigterm

COMMAND_MODULES = [
    "asr_kd.data.commands",
    "asr_kd.data.commands_features",
    "asr_kd.lang.commands",
    "asr_kd.align.commands",
    "asr_kd.decode.commands",
    "asr_kd.nnet.commands",
    "asr_kd.distill.commands",
    "asr_kd.distill.commands_specialists",
    "asr_kd.report.commands",
    "asr_kd.deploy.commands",
]


def import_command_modules() -> tuple[list, dict[str, str]]:
    """(importable command modules, {module name: missing third-party package} for the others)."""
    modules, missing = [], {}
    for name in COMMAND_MODULES:
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as e:
            if not e.name or e.name.partition(".")[0] == "asr_kd":
                raise  # our own code is broken: never hide that
            missing[name] = e.name
    return modules, missing


def build_parser() -> argparse.ArgumentParser:
    modules, missing = import_command_modules()
    epilog = None
    if missing:
        epilog = "not available here (package not installed): " + \
            ", ".join(f"{name} ({package})" for name, package in missing.items())
    parser = argparse.ArgumentParser(prog="asr-kd", description=__doc__.splitlines()[0], epilog=epilog)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in modules:
        module.register(sub)
    parser.set_defaults(unavailable=missing, commands=sorted(sub.choices))
    return parser


def _unavailable_command(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """The error line for a command that is unknown because its module could not be imported."""
    missing = parser.get_default("unavailable")
    command = next((a for a in argv if not a.startswith("-")), None)
    if not missing or command is None or command in parser.get_default("commands"):
        return None
    packages = ", ".join(sorted(set(missing.values())))
    return (f"asr-kd: error: unknown command {command!r}; command modules that could not be imported here: "
            f"{', '.join(missing)} (missing: {packages}); install the project's dependencies (pip install -e .)")


def main(argv: list[str] | None = None) -> int:
    die_with_parent()  # a recipe's child ends with run.sh, even on kill -9 (first: imports below take seconds)
    exit_on_sigterm()  # so locks are released and temp dirs removed
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    unavailable = _unavailable_command(parser, argv)
    if unavailable:
        print(unavailable, file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except AsrKdError as e:
        print(f"asr-kd {args.command}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a full disk can strike any write: one line, not a traceback
        message = disk_full_message(e)
        if message is None:
            raise
        print(f"asr-kd {args.command}: error: {message}", file=sys.stderr)
        return 1
    return 0
