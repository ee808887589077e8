"""Where the benchmarks write their figures: one folder per run with ``results.json`` and ``report.md``.

Standard library only, so that a benchmark that starts no server (``bench/trainer.py``) runs anywhere the trainer
does, a GPU machine without vLLM included.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the benchmarks run from a checkout, with or without the project installed


def default_out(kind: str) -> Path:
    return REPO / "bench" / "results" / time.strftime(f"{kind}-%Y%m%d-%H%M%S")


def figure_table(rows: list[tuple[str, str]]) -> str:
    """A two-column Markdown table of (figure, value) rows."""
    return "\n".join(["| figure | value |", "| --- | --- |", *(f"| {name} | {value} |" for name, value in rows)])


def write_results(out: Path, args: argparse.Namespace, results: dict, table: str) -> None:
    """``results.json`` (every figure, with the arguments that produced it) and ``report.md``; print the table."""
    summary = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, **results}
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    (out / "report.md").write_text(table + "\n")
    print(table)
