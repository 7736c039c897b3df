"""``python -m recipe.depo.report``: the paper's comparison tables and plots from run directories.

    python -m recipe.depo.report --runs GRPO=runs/grpo DAPO=runs/dapo DEPO=runs/depo --output report/

Writes ``OUTPUT/report.md`` (Table 1: accuracy and GPU-hours; Table 2: seconds per step by phase;
rollout accounting), ``OUTPUT/report.json`` (every number in the tables) and PNG plots, and prints
report.md. A run directory holds verl's ``metrics.jsonl`` and ``config.yaml`` (the launchers write
both) and optionally ``eval/`` from ``python -m recipe.depo.evaluate``; see ``recipe.depo.report.runs``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from recipe.depo.extras import require
from recipe.depo.fsutil import write_text_atomic
from recipe.depo.report.plots import draw
from recipe.depo.report.render import markdown
from recipe.depo.report.runs import ReportError, read_run
from recipe.depo.report.tables import run_report, series


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m recipe.depo.report", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", required=True, metavar="NAME=DIR", help="runs to compare, in table order")
    p.add_argument("--output", required=True, help="folder for report.md, report.json and the plots")
    p.add_argument(
        "--gpus-per-run", type=int, default=None, help="GPUs per run for GPU-hours (default: from each config.yaml)"
    )
    p.add_argument("--skip-steps", type=int, default=0, help="leading training steps left out of Table 2's means")
    return p


def parse_runs(specs: Sequence[str]) -> dict[str, Path]:
    runs: dict[str, Path] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name.strip() or not folder.strip():
            raise ReportError(f"--runs {spec!r}: expected NAME=DIR")
        if name in runs:
            raise ReportError(f"--runs: the name {name!r} is given twice")
        runs[name] = Path(folder)
    return runs


def build(
    runs: dict[str, Path], output: Path, gpus_per_run: int | None = None, skip_steps: int = 0
) -> tuple[dict, str]:
    if gpus_per_run is not None and gpus_per_run < 1:
        raise ReportError(f"--gpus-per-run must be >= 1, got {gpus_per_run}")
    if skip_steps < 0:
        raise ReportError(f"--skip-steps must be >= 0, got {skip_steps}")
    data = {name: read_run(name, folder) for name, folder in runs.items()}
    report = {"runs": {name: run_report(run, gpus_per_run, skip_steps) for name, run in data.items()}}
    output.mkdir(parents=True, exist_ok=True)
    plots, skipped = draw({name: series(run) for name, run in data.items()}, output)
    report["plots"] = plots
    text = markdown(report, plots, skipped)
    write_text_atomic(output / "report.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(output / "report.md", text)
    return report, text


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    require("report", "python -m recipe.depo.report")
    try:
        _, text = build(parse_runs(args.runs), Path(args.output), args.gpus_per_run, args.skip_steps)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(text)
    print(f"(written to {Path(args.output) / 'report.md'}, report.json and the plots beside it)")
    return 0
