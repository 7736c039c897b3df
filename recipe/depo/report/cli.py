"""``python -m recipe.depo.report``: the paper's comparison tables and plots from run directories.

    python -m recipe.depo.report --runs GRPO=runs/grpo DAPO=runs/dapo DEPO=runs/depo --output report/
    python -m recipe.depo.report --runs GRPO=runs/grpo_s0,runs/grpo_s1 DEPO=runs/depo_s0,runs/depo_s1 --output report/

Writes ``OUTPUT/report.md`` (Table 1: accuracy and GPU-hours; Table 2: seconds per step by phase;
rollout accounting), ``OUTPUT/report.json`` (every number in the tables) and PNG plots, and prints
report.md. A run directory holds verl's ``metrics.jsonl`` and ``config.yaml`` (the launchers write
both) and optionally ``eval/`` from ``python -m recipe.depo.evaluate``; see ``recipe.depo.report.runs``.
A method given several run directories (its seeds) shows the mean ± standard error over them in
every table and a band over them in the plots; see ``recipe.depo.report.seeds``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from recipe.depo.extras import require
from recipe.depo.fsutil import unwritable_dir_reason, write_text_atomic
from recipe.depo.report.plots import draw
from recipe.depo.report.render import markdown
from recipe.depo.report.runs import CONFIG_KEYS, ReportError, RunData, read_run
from recipe.depo.report.seeds import aggregate_reports
from recipe.depo.report.tables import run_report, series


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m recipe.depo.report", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--runs",
        nargs="+",
        action="extend",  # `--runs A=x --runs B=y` is both, not only the last
        required=True,
        metavar="NAME=DIR[,DIR...]",
        help="runs to compare, in table order; several comma-separated DIRs are one method's seeds (mean ± SE)",
    )
    p.add_argument("--output", required=True, help="folder for report.md, report.json and the plots")
    p.add_argument(
        "--gpus-per-run", type=int, default=None, help="GPUs per run for GPU-hours (default: from each config.yaml)"
    )
    p.add_argument("--skip-steps", type=int, default=0, help="leading training steps left out of Table 2's means")
    return p


def parse_runs(specs: Sequence[str]) -> dict[str, list[Path]]:
    """``NAME=DIR`` or ``NAME=DIR1,DIR2,...`` (a method's seeds) -> name -> run directories."""
    runs: dict[str, list[Path]] = {}
    for spec in specs:
        name, sep, folders = spec.partition("=")
        if any(c in name for c in "|\n\r"):
            raise ReportError(f"--runs {spec!r}: a run name may not hold '|' or a line break (it is a table cell)")
        parts = [f.strip() for f in folders.split(",")]
        if not sep or not name.strip() or not all(parts):
            raise ReportError(f"--runs {spec!r}: expected NAME=DIR or NAME=DIR1,DIR2,... (one DIR per seed)")
        if name in runs:
            raise ReportError(f"--runs: the name {name!r} is given twice")
        paths = [Path(p) for p in parts]
        seen: dict[Path, Path] = {}
        for path in paths:
            if path.resolve() in seen:
                raise ReportError(f"--runs {name}: {seen[path.resolve()]} and {path} are the same run directory")
            seen[path.resolve()] = path
        runs[name] = paths
    return runs


def _steps_text(steps: Sequence[int]) -> str:
    if not steps:
        return "none"
    return f"{len(steps)} ({steps[0]}..{steps[-1]})" if steps == list(range(steps[0], steps[-1] + 1)) else str(steps)


def check_seeds(name: str, seeds: Sequence[RunData], reports: Sequence[dict]) -> None:
    """A method's seeds are the same run but for the seed: same training steps (a crashed or
    shorter seed would skew every mean), same rollout settings, accuracy from the same source."""
    first, ref = seeds[0], reports[0]
    for run, report in zip(seeds[1:], reports[1:], strict=True):
        if sorted(run.steps) != sorted(first.steps):
            missing = sorted(set(first.steps) - set(run.steps)) or sorted(set(run.steps) - set(first.steps))
            raise ReportError(
                f"run {name}: its seeds logged different training steps ({first.path}: "
                f"{_steps_text(sorted(first.steps))}; {run.path}: {_steps_text(sorted(run.steps))}; "
                f"differing: {missing[:5]}); give seeds that ran the same steps"
            )
        differ = [key for key in CONFIG_KEYS if run.config.get(key) != first.config.get(key)]
        if differ:
            key = CONFIG_KEYS[differ[0]]
            raise ReportError(
                f"run {name}: its seeds differ in {key} ({first.path}: {first.config.get(differ[0])!r}, "
                f"{run.path}: {run.config.get(differ[0])!r}); seeds of one method share every setting but the seed"
            )
        for key in ("n", "train_batch_size", "gpus"):
            if report[key] != ref[key]:
                raise ReportError(
                    f"run {name}: its seeds differ in {key} ({first.path}: {ref[key]}, {run.path}: {report[key]}); "
                    "seeds of one method share every setting but the seed"
                )
        if report["val_source"] != ref["val_source"]:
            raise ReportError(
                f"run {name}: its seeds take accuracy from different places ({first.path}: {ref['val_source']}; "
                f"{run.path}: {report['val_source']}); evaluate every seed alike"
            )


def _check_output(output: Path) -> None:
    if output.exists() and not output.is_dir():
        raise ReportError(f"--output {output}: a file, not a folder")
    reason = unwritable_dir_reason(output)
    if reason:
        raise ReportError(f"--output {output}: {reason}")


def build(
    runs: Mapping[str, Path | Sequence[Path]], output: Path, gpus_per_run: int | None = None, skip_steps: int = 0
) -> tuple[dict, str]:
    """``runs``: name -> a run directory, or a list of them (a method's seeds)."""
    if gpus_per_run is not None and gpus_per_run < 1:
        raise ReportError(f"--gpus-per-run must be >= 1, got {gpus_per_run}")
    if skip_steps < 0:
        raise ReportError(f"--skip-steps must be >= 0, got {skip_steps}")
    output = Path(output)
    _check_output(output)
    dirs = {name: [Path(f)] if isinstance(f, (str, Path)) else [Path(p) for p in f] for name, f in runs.items()}
    data = {name: [read_run(name, folder) for folder in folders] for name, folders in dirs.items()}
    report: dict = {"runs": {}}
    for name, seeds in data.items():
        per_seed = [run_report(run, gpus_per_run, skip_steps) for run in seeds]
        check_seeds(name, seeds, per_seed)
        report["runs"][name] = aggregate_reports(per_seed)
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"--output {output}: cannot create it ({exc.strerror or exc})") from None
    plots, skipped = draw({name: [series(run) for run in seeds] for name, seeds in data.items()}, output)
    report["plots"] = plots
    text = markdown(report, plots, skipped)
    write_text_atomic(output / "report.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(output / "report.md", text)
    return report, text


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    require("report", "python -m recipe.depo.report")
    try:
        if not args.output.strip():
            raise ReportError("--output is empty")  # Path("") is the current folder
        _, text = build(parse_runs(args.runs), Path(args.output), args.gpus_per_run, args.skip_steps)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(text)
    print(f"(written to {Path(args.output) / 'report.md'}, report.json and the plots beside it)")
    return 0
