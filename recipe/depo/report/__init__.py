"""Comparison report over training runs: Table 1, Table 2, rollout accounting, plots.

``python -m recipe.depo.report --help``; see ``recipe.depo.report.cli``.
"""

from recipe.depo.report.runs import ReportError, read_run
from recipe.depo.report.tables import run_report

__all__ = ["ReportError", "read_run", "run_report"]
