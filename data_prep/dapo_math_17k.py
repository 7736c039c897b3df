"""DAPO-Math-17k -> verl RL parquet (deduplicated, optional language filter and held-out split).

    python -m data_prep.dapo_math_17k --output data/dapo_math_17k.parquet [--lang en] \
        [--val-size 500 --val-output data/dapo_math_17k_val.parquet]

The published file (``BytedTsinghua-SIA/DAPO-Math-17k``, ~1.79M rows) repeats each of its ~17.4K
problems about 100 times; training on it as-is would make one "epoch" a hundred passes over the
same prompts, so rows are deduplicated by problem text. The prompt keeps DAPO's template and its
``Answer:`` convention and ``data_source="math_dapo"``, so the reward matches verl's DAPO scorer;
``extra_info.question`` holds the problem without the template, which is what the difficulty
estimator reads.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from typing import Any

from data_prep.common import (
    BuildSummary,
    DataPrepError,
    add_common_args,
    as_plain,
    as_text,
    at_row,
    check_outputs,
    dedup_key,
    finish,
    is_missing,
    language_of,
    load_source,
    make_row,
    progress,
    require_columns,
    run_cli,
    user_message,
    where,
)
from recipe.depo.prompt_text import DAPO_TEMPLATE_HEAD, DAPO_TEMPLATE_TAIL

HUB_ID = "BytedTsinghua-SIA/DAPO-Math-17k"
DATA_SOURCE = "math_dapo"

# The template every DAPO-Math-17k prompt is wrapped in, defined beside the estimator's text.
TEMPLATE_HEAD = DAPO_TEMPLATE_HEAD
TEMPLATE_TAIL = DAPO_TEMPLATE_TAIL


def strip_template(prompt_text: str) -> str | None:
    """The raw problem inside DAPO's template, or None when the text is not in that template."""
    text = prompt_text.strip()
    head = TEMPLATE_HEAD.strip()
    if not text.startswith(head):
        return None
    body = text[len(head) :]
    tail = TEMPLATE_TAIL.strip()
    if body.rstrip().endswith(tail):
        body = body.rstrip()[: -len(tail)]
    body = body.strip()
    return body or None


def build(
    frame,
    origin: str,
    *,
    lang: str = "all",
    val_size: int = 0,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], BuildSummary]:
    """Rows for train (and val when ``val_size``), plus the summary. Pure: no file IO."""
    require_columns(frame, ["prompt", "reward_model"], origin)
    summary = BuildSummary(name="dapo_math_17k", origin=origin, rows_read=len(frame))
    kept: list[dict[str, Any]] = []
    first_answer: dict[str, str] = {}
    columns = list(frame.columns)
    for i, record in enumerate(progress(frame.itertuples(index=False), total=len(frame), desc="dapo")):
        row = dict(zip(columns, record))
        at = where(origin, i)
        with at_row(at):
            item = _read_row(row, i, at, summary)
        if item is None:
            continue
        # deduplicate before the language filter so the duplicate count does not depend on --lang
        key = dedup_key(item["question"])
        if key in first_answer:
            summary.duplicates_removed += 1
            if first_answer[key] != item["answer"]:
                summary.duplicate_answer_conflicts += 1
            continue
        first_answer[key] = item["answer"]
        row_lang = item["extra"]["lang"]
        if lang != "all" and row_lang != lang:
            summary.drops.drop(f"language {row_lang} (kept: {lang})")
            continue
        kept.append(item)
    if val_size < 0:
        raise DataPrepError("--val-size must be >= 0")
    if val_size >= len(kept) and val_size > 0:
        raise DataPrepError(f"--val-size {val_size} leaves no training rows ({len(kept)} unique problems)")
    val_positions = set(random.Random(seed).sample(range(len(kept)), val_size)) if val_size else set()
    train_rows, val_rows = [], []
    for position, item in enumerate(kept):
        split = "val" if position in val_positions else "train"
        target = val_rows if split == "val" else train_rows
        target.append(
            make_row(
                data_source=DATA_SOURCE,
                prompt_text=item["prompt_text"],
                question=item["question"],
                ground_truth=item["answer"],
                index=len(target),
                split=split,
                ability=item["ability"],
                extra=item["extra"],
            )
        )
    return train_rows, val_rows, summary


def _read_row(row: dict[str, Any], i: int, at: str, summary: BuildSummary) -> dict[str, Any] | None:
    """One source row as the fields a training row needs; None (counted) when it is dropped.
    Values of the wrong type are a DataPrepError: written out as str() they would look like data."""
    prompt_text = user_message(row["prompt"])
    if prompt_text is None:
        summary.drops.drop("prompt has no user message", at)
        return None
    question = strip_template(prompt_text)
    if question is None:
        summary.drops.drop("prompt is not in the DAPO template", at)
        return None
    reward_model = as_plain(row["reward_model"])
    if not isinstance(reward_model, dict):
        if is_missing(reward_model):
            summary.drops.drop("empty ground_truth", at)
            return None
        raise DataPrepError(f"reward_model is a {type(reward_model).__name__}, expected a mapping with ground_truth")
    answer = as_text(reward_model.get("ground_truth"), "reward_model.ground_truth")
    if answer is None:
        summary.drops.drop("empty ground_truth", at)
        return None
    extra_info = as_plain(row.get("extra_info"))
    if is_missing(extra_info):
        extra_info = {}
    if not isinstance(extra_info, dict):
        raise DataPrepError(
            f"extra_info is a {type(extra_info).__name__} ({str(extra_info)[:40]!r}), expected a mapping"
        )
    source_index = extra_info.get("index", i)
    return {
        "prompt_text": prompt_text,
        "question": question,
        "answer": answer,
        "ability": as_text(row.get("ability"), "ability") or "MATH",
        "extra": {
            "lang": language_of(question),
            "source_index": str(i if is_missing(source_index) else as_plain(source_index)),
        },
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data_prep.dapo_math_17k", description=__doc__.split("\n\n")[0])
    add_common_args(p, output_help="training parquet path")
    p.add_argument("--lang", choices=["en", "zh", "all"], default="all", help="keep English, Chinese or all problems")
    p.add_argument("--val-size", type=int, default=0, help="hold out this many unique problems (random, --seed)")
    p.add_argument("--val-output", default=None, help="parquet path for the held-out rows (required with --val-size)")
    p.add_argument("--split", default="train", help="hub split (default: train)")
    return p


def _main(args: argparse.Namespace) -> None:
    if args.val_size < 0:
        raise DataPrepError("--val-size must be >= 0")
    if args.val_size and not args.val_output:
        raise DataPrepError("--val-size needs --val-output")
    if args.val_output and not args.val_size:
        # nothing would be written there, and the run would look as if it held rows out
        raise DataPrepError("--val-output needs --val-size N (how many problems to hold out)")
    check_outputs(
        {"--output": args.output, "--val-output": args.val_output}, args.overwrite, inputs={"--input": args.input}
    )
    frame, origin = load_source(args.input, HUB_ID, split=args.split, limit=args.limit)
    train_rows, val_rows, summary = build(frame, origin, lang=args.lang, val_size=args.val_size, seed=args.seed)
    outputs = {args.output: train_rows}
    if args.val_size:
        outputs[args.val_output] = val_rows
    finish(summary, outputs, args.overwrite)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
