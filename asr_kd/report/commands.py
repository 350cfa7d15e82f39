"""CLI: report (exp dirs -> RESULTS.md, results.json, PNG plots), report-kinds (KINDS.md)."""
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

    p = sub.add_parser("report-kinds", help="rows of kinds-of-distillation runs -> KINDS.md, kinds.json")
    p.add_argument("out", help="output dir")
    p.add_argument("--row", nargs=4, action="append", required=True, metavar=("NAME", "MODEL_DIR", "SCORES_DIR", "STEP"),
                   help="a row: its name, the model dir, the dir with eval_*.json and decode_test/, the recipe step")
    p.add_argument("--done-dir", required=True, help="the recipe's .done dir (step wall seconds)")
    p.add_argument("--seed", type=int, required=True, help="the seed of the runs (shown in the table)")
    p.set_defaults(func=_report_kinds)


def _report(args) -> None:
    from asr_kd.report.report import write_report

    path = write_report(args.exp_dirs, args.out, plots=not args.no_plots, corpus=args.corpus)
    print(path.read_text(encoding="utf-8"))


def _report_kinds(args) -> None:
    from asr_kd.report.kinds import KindsRow, write_kinds_report

    path = write_kinds_report(args.out, [KindsRow(*r) for r in args.row], done_dir=args.done_dir, seed=args.seed)
    print(path.read_text(encoding="utf-8"))
