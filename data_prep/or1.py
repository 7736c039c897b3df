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
    check_output,
    finish,
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
    """The JSON-encoded answer list -> list of non-empty strings; None when it cannot be decoded."""
    raw = as_plain(raw)
    if isinstance(raw, list):
        values = raw
    else:
        text = as_text(raw)
        if text is None:
            return []
        try:
            values = json.loads(text)
        except (json.JSONDecodeError, TypeError):
            return None
        if not isinstance(values, list):
            values = [values]
    answers = [as_text(v) for v in values]
    return [a for a in answers if a is not None]


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
        if not 0 <= low <= high:
            raise DataPrepError(f"--difficulty-range {low} {high}: need 0 <= LOW <= HIGH")
    summary = BuildSummary(name="or1", origin=origin, rows_read=len(frame))
    kept = UniqueBoxedRows(summary, DATA_SOURCE)
    columns = list(frame.columns)
    for i, record in enumerate(progress(frame.itertuples(index=False), total=len(frame), desc="or1")):
        row = dict(zip(columns, record))
        at = where(origin, i)
        content = user_message(row["prompt"])
        if content is None:
            summary.drops.drop("prompt has no user message", at)
            continue
        question = strip_instruction(content)
        reward_model = as_plain(row["reward_model"])
        if not isinstance(reward_model, dict) or "ground_truth" not in reward_model:
            summary.drops.drop("reward_model has no ground_truth", at)
            continue
        answers = decode_answers(reward_model["ground_truth"])
        if answers is None:
            summary.drops.drop("ground_truth is not a JSON list", at)
            continue
        if not answers:
            summary.drops.drop("empty ground_truth", at)
            continue
        extra_info = as_plain(row.get("extra_info")) or {}
        difficulty = extra_info.get("model_difficulty") if isinstance(extra_info, dict) else None
        difficulty = difficulty if isinstance(difficulty, dict) else {}
        if difficulty_range is not None:
            value = difficulty.get(difficulty_model)
            if value is None:
                summary.drops.drop(f"no model_difficulty for {difficulty_model}", at)
                continue
            if not low <= int(value) <= high:
                summary.drops.drop(f"{difficulty_model} solved {int(value)}/16, outside {low}..{high}")
                continue
        kept.add(
            question,
            answers[0],
            {
                "answers": answers,
                "model_difficulty": {name: difficulty.get(name) for name in DIFFICULTY_MODELS},
                "source_data_source": as_text(row.get("data_source")) or "",
                "source_index": int(extra_info.get("index", i)) if isinstance(extra_info, dict) else i,
            },
        )
    return kept.rows, summary


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
    check_output(args.output, args.overwrite)
    frame, origin = load_source(args.input, HUB_ID, split=args.split, limit=args.limit)
    difficulty_range = None if args.no_difficulty_filter else tuple(args.difficulty_range)
    rows, summary = build(frame, origin, difficulty_model=args.difficulty_model, difficulty_range=difficulty_range)
    finish(summary, {args.output: rows}, args.overwrite)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
