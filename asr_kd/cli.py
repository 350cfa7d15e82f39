"""The `asr-kd` command (also `python -m asr_kd`). Subcommands are thin wrappers of library functions.

Each pipeline stage has a `commands.py` with `register(subparsers)`; COMMAND_MODULES is the
explicit table of them (no import side effects). An AsrKdError prints its message and exits 1.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from asr_kd.errors import AsrKdError

COMMAND_MODULES = [
    "asr_kd.data.commands",
    "asr_kd.data.commands_features",
    "asr_kd.lang.commands",
    "asr_kd.align.commands",
    "asr_kd.decode.commands",
    "asr_kd.nnet.commands",
    "asr_kd.distill.commands",
    "asr_kd.report.commands",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asr-kd", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except AsrKdError as e:
        print(f"asr-kd {args.command}: error: {e}", file=sys.stderr)
        return 1
    return 0
