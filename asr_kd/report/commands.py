"""CLI: report (exp dirs -> RESULTS.md, results.json, PNG plots)."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="exp dirs (several = seeds) -> RESULTS.md, results.json, PNG plots")
    p.add_argument("exp_dirs", nargs="+", help="recipe exp dirs; the same system in several is shown as mean +- std")
    p.add_argument("--out", required=True, help="output dir")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--corpus", help="corpus whose external references to list (default: recipes/<corpus>/exp "
                                    "in the exp dir's path)")
    p.set_defaults(func=_report)


def _report(args) -> None:
    from asr_kd.report.report import write_report

    path = write_report(args.exp_dirs, args.out, plots=not args.no_plots, corpus=args.corpus)
    print(path.read_text(encoding="utf-8"))
