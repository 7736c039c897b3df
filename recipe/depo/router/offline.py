"""Offline Table 3: a threshold sweep from per-query results both models already have.

No generation happens here: given the small and the large model's per-query accuracies on an
evaluation set (e.g. Avg@32), the estimator scores the queries and ``sweep`` gives each
threshold's routed accuracy and share on the small model.

    python -m recipe.depo.router --estimator CKPT_DIR --data data/eval/gsm8k.parquet \
        --small-results small.jsonl --large-results large.jsonl --thresholds 0.3 0.5 0.7 0.75
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from recipe.depo.router.core import DifficultyRouter, sweep


def _read_results(path: Path, column: str) -> pd.Series:
    """Per-query accuracy keyed by ``index`` from a .jsonl/.json/.parquet results file."""
    if not path.exists():
        raise FileNotFoundError(f"results file {path} does not exist")
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_json(path, lines=path.suffix == ".jsonl")
    for needed in ("index", column):
        if needed not in frame.columns:
            raise ValueError(f"results file {path}: missing column {needed!r}; found {list(frame.columns)}")
    if frame["index"].duplicated().any():
        raise ValueError(f"results file {path}: duplicate values in column 'index'")
    return frame.set_index("index")[column].astype(float)


def _questions(frame: pd.DataFrame, path: Path) -> tuple[list[str], list]:
    if "extra_info" not in frame.columns:
        raise ValueError(f"{path}: missing column 'extra_info' (expected verl's RL schema from data_prep)")
    questions, indices = [], []
    for row_number, info in enumerate(frame["extra_info"]):
        if not isinstance(info, dict) or "question" not in info or "index" not in info:
            raise ValueError(f"{path}: row {row_number}: extra_info needs 'question' and 'index'")
        questions.append(str(info["question"]))
        indices.append(info["index"])
    return questions, indices


def format_table(rows: list[dict]) -> str:
    lines = ["| setting | accuracy | on small / on large | share on small |", "|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['setting']} | {100 * row['accuracy']:.1f} | {row['n_small']}/{row['n_large']} "
            f"| {100 * row['share_small']:.1f}% |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--estimator", required=True, help="estimator checkpoint directory (OnlineEstimator.save)")
    parser.add_argument("--data", required=True, type=Path, help="evaluation parquet in verl's RL schema")
    parser.add_argument("--small-results", required=True, type=Path, help="per-query results of the small model")
    parser.add_argument("--large-results", required=True, type=Path, help="per-query results of the large model")
    parser.add_argument("--acc-column", default="acc", help="per-query accuracy column in the results files")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.75, 0.70, 0.50, 0.30])
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = parser.parse_args(argv)

    frame = pd.read_parquet(args.data)
    questions, indices = _questions(frame, args.data)
    small = _read_results(args.small_results, args.acc_column)
    large = _read_results(args.large_results, args.acc_column)
    for name, series in (("--small-results", small), ("--large-results", large)):
        missing = [i for i in indices if i not in series.index]
        if missing:
            raise ValueError(f"{name}: no result for {len(missing)} queries of {args.data}, e.g. index {missing[0]}")

    router = DifficultyRouter.from_checkpoint(args.estimator)
    predicted = router.predict(questions)
    rows = sweep(predicted, small.loc[indices].to_numpy(), large.loc[indices].to_numpy(), args.thresholds)
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
