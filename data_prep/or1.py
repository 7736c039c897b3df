"""Skywork-OR1-RL-Data (math part) -> verl RL parquet, filtered on the difficulty counts it ships.

    python -m data_prep.or1 --output data/or1_math.parquet \
        [--difficulty-model DeepSeek-R1-Distill-Qwen-7B] [--difficulty-range 1 15]

``Skywork/Skywork-OR1-RL-Data`` (split ``math``, ~105K rows) is already in verl's layout, but its
``reward_model.ground_truth`` is a JSON-encoded list of acceptable answers, and
``extra_info.model_difficulty`` maps each DeepSeek-R1-Distill-Qwen model (1.5B/7B/32B) to how many
of its 16 samples were right. Its authors train on problems with 1..15 of 16 (neither always nor
never solved); ``--difficulty-range`` reproduces that for the chosen model (``--no-difficulty-filter``
keeps everything). The first answer becomes ``ground_truth`` and the whole list is kept in
``extra_info.answers``, which recipe.depo.reward accepts as alternatives. The prompt is rebuilt
with the boxed-answer instruction the reward expects; ``extra_info.question`` is the bare problem.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from data_prep.common import (
    BuildSummary,
    DataPrepError,
    UniqueBoxedRows,
    add_common_args,
    as_plain,
    as_text,
    at_row,
    check_outputs,
    finish,
    is_missing,
    load_source,
    progress,
    require_columns,
    run_cli,
    user_message,
    where,
)

HUB_ID = "Skywork/Skywork-OR1-RL-Data"
DATA_SOURCE = "skywork_or1"
DIFFICULTY_MODELS = ("DeepSeek-R1-Distill-Qwen-1.5B", "DeepSeek-R1-Distill-Qwen-7B", "DeepSeek-R1-Distill-Qwen-32B")
# The paper's OR1 rows train Qwen2.5-7B-Instruct; the 7B distill is the closest scale shipped.
DEFAULT_DIFFICULTY_MODEL = "DeepSeek-R1-Distill-Qwen-7B"
DEFAULT_DIFFICULTY_RANGE = (1, 15)

# Answer instructions some copies of the set append to the problem; removed so the estimator
# sees the problem alone and the prompt does not carry two instructions.
_INSTRUCTION_SUFFIXES = (
    "Let's think step by step and output the final answer within \\boxed{}.",
    "Please reason step by step, and put your final answer within \\boxed{}.",
)


def decode_answers(raw: Any) -> list[str] | None:
    """The JSON-encoded answer list -> list of non-empty strings ([] when empty); None when it is
    not a list of answers: not JSON, a JSON object, or an item that is not a string or a number
    (a nested list, an object, null, NaN, an empty string), which str() would pass off as an
    answer."""
    raw = as_plain(raw)
    if isinstance(raw, list):
        values = raw
    else:
        if is_missing(raw):
            return []
        if not isinstance(raw, str):
            return None
        try:
            values = json.loads(raw)
        except (json.JSONDecodeError, TypeError):
            return None
        if isinstance(values, (str, int, float)) and not isinstance(values, bool):
            values = [values]
    if not isinstance(values, list):
        return None
    answers = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            return None
        try:
            text = as_text(value)
        except DataPrepError:  # inf
            return None
        if text is None:
            return None
        answers.append(text)
    return answers


def solve_count(value: Any, model: str) -> int:
    """A model_difficulty entry: how many of 16 samples were right, a whole number."""
    original = value
    if isinstance(value, bool):
        value = None
    elif isinstance(value, str):
        value = int(value.strip()) if value.strip().lstrip("+-").isdigit() else None
    elif isinstance(value, float):
        value = int(value) if value.is_integer() else None
    elif hasattr(value, "item"):  # numpy integer from parquet
        value = value.item() if float(value.item()).is_integer() else None
    if not isinstance(value, int):
        raise DataPrepError(f"extra_info.model_difficulty[{model!r}] is {original!r}, not a whole number of solves")
    return value


def strip_instruction(text: str) -> str:
    text = text.strip()
    for suffix in _INSTRUCTION_SUFFIXES:
        if text.endswith(suffix):
            text = text[: -len(suffix)].strip()
    return text


def build(
    frame,
    origin: str,
    *,
    difficulty_model: str | None = DEFAULT_DIFFICULTY_MODEL,
    difficulty_range: tuple[int, int] | None = DEFAULT_DIFFICULTY_RANGE,
) -> tuple[list[dict[str, Any]], BuildSummary]:
    require_columns(frame, ["prompt", "reward_model"], origin)
    if difficulty_range is not None:
        require_columns(frame, ["extra_info"], origin)
        low, high = difficulty_range
        if not 0 <= low <= high <= 16:
            raise DataPrepError(f"--difficulty-range {low} {high}: need 0 <= LOW <= HIGH <= 16")
    summary = BuildSummary(name="or1", origin=origin, rows_read=len(frame))
    kept = UniqueBoxedRows(summary, DATA_SOURCE)
    columns = list(frame.columns)
    for i, record in enumerate(progress(frame.itertuples(index=False), total=len(frame), desc="or1")):
        row = dict(zip(columns, record))
        at = where(origin, i)
        with at_row(at):
            _add_row(row, i, at, kept, summary, difficulty_model, difficulty_range)
    return kept.rows, summary


def _add_row(
    row: dict[str, Any],
    i: int,
    at: str,
    kept: UniqueBoxedRows,
    summary: BuildSummary,
    difficulty_model: str | None,
    difficulty_range: tuple[int, int] | None,
) -> None:
    content = user_message(row["prompt"])
    if content is None:
        summary.drops.drop("prompt has no user message", at)
        return
    question = strip_instruction(content)
    reward_model = as_plain(row["reward_model"])
    if not isinstance(reward_model, dict) or "ground_truth" not in reward_model:
        summary.drops.drop("reward_model has no ground_truth", at)
        return
    answers = decode_answers(reward_model["ground_truth"])
    if answers is None:
        summary.drops.drop("ground_truth is not a JSON list of answers", at)
        return
    if not answers:
        summary.drops.drop("empty ground_truth", at)
        return
    extra_info = as_plain(row.get("extra_info"))
    if is_missing(extra_info):
        extra_info = {}
    if not isinstance(extra_info, dict):
        raise DataPrepError(f"extra_info is a {type(extra_info).__name__}, expected a mapping")
    difficulty = extra_info.get("model_difficulty")
    difficulty = difficulty if isinstance(difficulty, dict) else {}
    if difficulty_range is not None:
        value = difficulty.get(difficulty_model)
        if is_missing(value):
            summary.drops.drop(f"no model_difficulty for {difficulty_model}", at)
            return
        solved = solve_count(value, difficulty_model)
        low, high = difficulty_range
        if not low <= solved <= high:
            summary.drops.drop(f"{difficulty_model} solved {solved}/16, outside {low}..{high}")
            return
    source_index = extra_info.get("index")
    kept.add(
        question,
        answers[0],
        {
            "answers": answers,
            "model_difficulty": {
                name: None if is_missing(difficulty.get(name)) else solve_count(difficulty.get(name), name)
                for name in DIFFICULTY_MODELS
            },
            "source_data_source": as_text(row.get("data_source"), "data_source") or "",
            # the published index is an int, copies of the set use ids like "q-17": kept as text
            "source_index": str(i if is_missing(source_index) else as_plain(source_index)),
        },
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data_prep.or1", description=__doc__.split("\n\n")[0])
    add_common_args(p)
    p.add_argument("--split", default="math", help="hub split (default: math; the set also has code)")
    p.add_argument(
        "--difficulty-model",
        default=DEFAULT_DIFFICULTY_MODEL,
        choices=DIFFICULTY_MODELS,
        help=f"whose solve counts to filter on (default: {DEFAULT_DIFFICULTY_MODEL})",
    )
    p.add_argument(
        "--difficulty-range",
        nargs=2,
        type=int,
        metavar=("LOW", "HIGH"),
        default=list(DEFAULT_DIFFICULTY_RANGE),
        help="keep problems that model solved LOW..HIGH times out of 16 (default: 1 15)",
    )
    p.add_argument("--no-difficulty-filter", action="store_true", help="keep every difficulty")
    return p


def _main(args: argparse.Namespace) -> None:
    check_outputs({"--output": args.output}, args.overwrite, inputs={"--input": args.input})
    frame, origin = load_source(args.input, HUB_ID, split=args.split, limit=args.limit)
    difficulty_range = None if args.no_difficulty_filter else tuple(args.difficulty_range)
    rows, summary = build(frame, origin, difficulty_model=args.difficulty_model, difficulty_range=difficulty_range)
    finish(summary, {args.output: rows}, args.overwrite)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
