"""The specialist table (paper §5, Table 4 shape) in the report, where `eval-specialists` wrote one.

Looks for `<exp>/*/specialist_table.json` (run_specialists.sh: `exp/specialists_<setting>/`) in
each run; renders it with the function that wrote the command's own markdown, so the two never differ.
"""
from __future__ import annotations

from pathlib import Path

from asr_kd.distill.specialist_runs import specialist_markdown
from asr_kd.io import read_json


def specialist_tables(exp_dirs: list[Path]) -> list[tuple[Path, dict]]:
    """(table file, its record) for every specialist_table.json one level below each exp dir."""
    return [(f, read_json(f)) for d in exp_dirs for f in sorted(Path(d).glob("*/specialist_table.json"))]


def specialist_section(exp_dirs: list[Path]) -> str:
    """Markdown: one table per specialist run found ('' if none)."""
    return "\n".join(f"From `{f}`:\n\n{specialist_markdown(record)}" for f, record in specialist_tables(exp_dirs))
