"""Offline Table 3: route between a small and a large model from both models' evaluate outputs.

No generation happens here. ``python -m recipe.depo.evaluate`` has written each model's per-query
Avg@n (``OUT/<set>.jsonl``); the small model's DEPO estimator scores every query, and for each
threshold tau a query predicted >= tau stays on the small model. Prints Table 3's layout: per set
the routed accuracy with (queries on small / on large), the macro ``Avg`` and the pooled share on
the small model, plus the two single-model rows.

    python -m recipe.depo.router --estimator CKPT/global_step_N --data data/eval \\
        --small-results runs/small/eval --large-results runs/large/eval --thresholds 0.75 0.7 0.5 0.3

Everything is checked (arguments, data, both result sets, their match by set and index) before
the estimator is loaded.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recipe.depo.evaluate.data import EvalError, EvalQuery, load_set, parquet_files
from recipe.depo.evaluate.results import display_name, ordered_sets
from recipe.depo.fsutil import unwritable_dir_reason, write_text_atomic
from recipe.depo.prompt_text import prompt_text
from recipe.depo.router.core import DifficultyRouter, table3
from recipe.depo.router.estimator_checkpoint import CheckpointError, check_checkpoint

THRESHOLDS = [0.75, 0.70, 0.50, 0.30]  # the paper's


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is outside [0, 1] (a predicted accuracy)")
    return value + 0.0  # -0 is 0 (the row would read "tau=-0")


def estimator_dir(path: str) -> Path:
    """An estimator checkpoint (``OnlineEstimator.save``), or a verl step folder holding one in ``depo/``."""
    folder = Path(path)
    for candidate in (folder, folder / "depo" / "estimator", folder / "estimator"):
        if (candidate / "state.json").is_file() and (candidate / "heads.pt").is_file():
            return candidate
    raise EvalError(
        f"--estimator {path}: not an estimator checkpoint (state.json + heads.pt), nor a verl step folder "
        "with depo/estimator/"
    )


def _records(path: Path) -> list[tuple[str, object]]:
    """``(where, record)`` per result; ``where`` names the file and line for error messages."""
    if path.suffix == ".jsonl":
        out = []
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                out.append((f"{path} line {number}", json.loads(line)))
            except json.JSONDecodeError:
                raise EvalError(
                    f"results file {path} line {number} is not JSON (expected evaluate's one object per line)"
                ) from None
        return out
    if path.suffix == ".json":
        try:
            payload = json.loads(path.read_text(encoding="utf-8", errors="replace"))
        except json.JSONDecodeError:
            raise EvalError(f"results file {path} is not JSON") from None
        if not isinstance(payload, list):
            raise EvalError(f"results file {path}: expected a JSON list of per-query objects")
        return [(f"{path} item {i}", r) for i, r in enumerate(payload)]
    if path.suffix == ".parquet":
        import pandas as pd

        try:
            frame = pd.read_parquet(path)
        except Exception as exc:
            raise EvalError(f"results file {path}: not a readable parquet file ({exc})") from None
        return [(f"{path} row {i}", r) for i, r in enumerate(frame.to_dict("records"))]
    raise EvalError(f"results file {path}: unsupported format {path.suffix!r} (expected evaluate's .jsonl)")


def read_results(path: Path, column: str) -> dict[int, tuple[float, str | None]]:
    """index -> (accuracy in [0, 1], prompt_hash or None), every value checked."""
    if not path.is_file():
        raise EvalError(f"results file {path} does not exist")
    out: dict[int, tuple[float, str | None]] = {}
    for where, record in _records(path):
        if not isinstance(record, dict):
            raise EvalError(f"{where}: expected an object with 'index' and {column!r}")
        index, acc = record.get("index"), record.get(column)
        if isinstance(index, bool) or not isinstance(index, (int, float)) or int(index) != index:
            raise EvalError(f"{where}: 'index' must be an integer, got {index!r}")
        if isinstance(acc, bool) or not isinstance(acc, (int, float)) or not math.isfinite(acc) or not 0 <= acc <= 1:
            raise EvalError(f"{where}: {column!r} must be a number in [0, 1], got {acc!r}")
        if int(index) in out:
            raise EvalError(f"{where}: index {int(index)} appears twice")
        prompt = record.get("prompt_hash")
        out[int(index)] = (float(acc), prompt if isinstance(prompt, str) else None)
    if not out:
        raise EvalError(f"results file {path} is empty")
    return out


def results_file(arg: str, flag: str, set_name: str, single_set: bool) -> Path:
    path = Path(arg)
    if path.is_dir():
        file = path / f"{set_name}.jsonl"
        if not file.is_file():
            raise EvalError(f"{flag} {path}: no {set_name}.jsonl (evaluate this model on set {set_name!r} first)")
        return file
    if not path.exists():
        raise EvalError(f"{flag} {path}: no such file or folder")
    if not single_set:
        raise EvalError(f"{flag} {path}: a single results file, but --data has several sets; pass evaluate's folder")
    return path


def matched(set_name: str, queries: list[EvalQuery], results: dict, file: Path) -> np.ndarray:
    """Per-query accuracy in the data's order; the results must cover exactly the set's queries."""
    indices = [q.index for q in queries]
    missing = [i for i in indices if i not in results]
    extra = sorted(set(results) - set(indices))
    if missing:
        raise EvalError(f"set {set_name}: {file} has no result for {len(missing)} queries, e.g. index {missing[0]}")
    if extra:
        raise EvalError(
            f"set {set_name}: {file} has {len(extra)} results for queries the set does not have, e.g. index {extra[0]}"
        )
    for query in queries:
        stored = results[query.index][1]
        if stored is not None and stored != query.prompt_hash:
            raise EvalError(
                f"set {set_name}: {file} index {query.index} was evaluated on a different prompt (prompt_hash)"
            )
    return np.array([results[i][0] for i in indices], dtype=np.float64)


def format_table(rows: list[dict], set_names: list[str]) -> str:
    head = ["setting", *(display_name(s) for s in set_names), "Avg", "share on small"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---|" * (len(head) - 1)]
    for row in rows:
        cells = [row["setting"]]
        for name in set_names:
            cell = row["sets"][name]
            text = f"{100 * cell['accuracy']:.1f}"
            if row["threshold"] is not None:
                text += f" ({cell['n_small']}/{cell['n_large']})"
            cells.append(text)
        cells += [f"{100 * row['avg']:.1f}", f"{100 * row['share_small']:.1f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m recipe.depo.router", description=__doc__.split("\n\n")[0])
    p.add_argument("--estimator", required=True, help="estimator checkpoint, or the small model's verl step folder")
    p.add_argument("--data", required=True, nargs="+", help="eval parquet files or folders (verl's RL schema)")
    p.add_argument("--small-results", required=True, help="evaluate's output folder for the small model")
    p.add_argument("--large-results", required=True, help="evaluate's output folder for the large model")
    p.add_argument("--acc-column", default="acc", help="per-query accuracy field in the results")
    p.add_argument("--thresholds", type=_threshold, nargs="+", default=THRESHOLDS, metavar="TAU")
    p.add_argument("--small-name", default="small", help="row label, e.g. 1.5B")
    p.add_argument("--large-name", default="large", help="row label, e.g. 7B")
    p.add_argument("--json", action="store_true", help="print the rows as JSON (accuracies as fractions)")
    p.add_argument("--json-output", default=None, help="also write the rows as JSON to this file")
    return p


def check_json_output(path: str | None) -> None:
    """Before the estimator runs: an output that cannot be written is found in a second, not after."""
    if path is None:
        return
    if path.endswith(("/", "\\")) or Path(path).is_dir():
        raise EvalError(f"--json-output {path} is a directory; give the path of the JSON file to write")
    reason = unwritable_dir_reason(Path(path).absolute().parent)
    if reason:
        raise EvalError(f"--json-output {path}: {reason}")


def run(args: argparse.Namespace) -> tuple[list[dict], list[str]]:
    check_json_output(args.json_output)
    files = parquet_files(args.data)
    sets = {name: load_set(file) for name, file in files.items()}
    outcomes = {}
    for name, queries in sets.items():
        per_model = []
        for flag, arg in (("--small-results", args.small_results), ("--large-results", args.large_results)):
            file = results_file(arg, flag, name, single_set=len(sets) == 1)
            per_model.append(matched(name, queries, read_results(file, args.acc_column), file))
        outcomes[name] = per_model
    checkpoint = estimator_dir(args.estimator)
    check_checkpoint(str(checkpoint))

    # every input is checked: only now the (possibly slow) estimator runs.
    router = DifficultyRouter.from_checkpoint(str(checkpoint))
    texts = [prompt_text(q.messages, q.extra_info) for queries in sets.values() for q in queries]
    predicted = router.predict(texts)
    table, start = {}, 0
    for name, queries in sets.items():
        small, large = outcomes[name]
        table[name] = (predicted[start : start + len(queries)], small, large)
        start += len(queries)
    rows = table3(table, args.thresholds, names=(args.small_name, args.large_name))
    return rows, ordered_sets(sets)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        rows, set_names = run(args)
    except (EvalError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json_output:
        write_text_atomic(args.json_output, json.dumps(rows, indent=2) + "\n")
    print(json.dumps(rows, indent=2) if args.json else format_table(rows, set_names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
