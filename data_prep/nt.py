"""The paper's "NT" training set -> verl RL parquet: a generic hard-math loader with named presets.

    python -m data_prep.nt --output data/nt.parquet                      # default preset
    python -m data_prep.nt --preset deepmath-103k --output data/nt.parquet
    python -m data_prep.nt --source some/hub-set --problem-col problem --answer-col answer --output ...

No source we could read says what "NT" is, only that it is harder than DAPO-Math-17k for a 7B
model. Which public set stands in for it is OUR ASSUMPTION (docs/data.md explains the choice):
the default preset is ``numina-tir`` (AI-MO/NuminaMath-TIR), whose initials match the paper's
abbreviation the way "OR1" abbreviates Skywork-OR1. Every preset is a set of defaults for the
generic flags, which can override any of them.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from data_prep.common import (
    BuildSummary,
    DataPrepError,
    UniqueBoxedRows,
    add_common_args,
    as_text,
    at_row,
    check_outputs,
    finish,
    last_boxed,
    load_source,
    progress,
    require_columns,
    run_cli,
    where,
)

DATA_SOURCE = "nt"


@dataclass(frozen=True)
class Preset:
    source: str
    problem_col: str
    answer_col: str
    split: str = "train"
    config: str | None = None
    # the answer column is a worked solution: take its last \boxed{}
    answer_from_boxed: bool = False
    difficulty_col: str | None = None
    difficulty_min: float | None = None
    difficulty_max: float | None = None
    note: str = ""


PRESETS: dict[str, Preset] = {
    "numina-tir": Preset(
        "AI-MO/NuminaMath-TIR",
        "problem",
        "solution",
        answer_from_boxed=True,
        note="72K competition problems with numeric answers; initials match 'NT' (default)",
    ),
    "deepmath-103k": Preset(
        "zwhe99/DeepMath-103K",
        "question",
        "final_answer",
        difficulty_col="difficulty",
        note="103K problems built to be hard (difficulty 5-9), decontaminated, verifiable answers",
    ),
    "deepscaler": Preset(
        "agentica-org/DeepScaleR-Preview-Dataset",
        "problem",
        "answer",
        note="40K AIME/AMC/Omni-MATH/STILL problems used for DeepScaleR",
    ),
    "big-math-hard": Preset(
        "SynthLabsAI/Big-Math-RL-Verified",
        "problem",
        "answer",
        difficulty_col="llama8b_solve_rate",
        difficulty_max=0.2,
        note="Big-Math restricted to problems Llama-3.1-8B solves at most 20% of the time",
    ),
    "openr1-math": Preset(
        "open-r1/OpenR1-Math-220k",
        "problem",
        "answer",
        config="default",
        note="NuminaMath-1.5 problems with verified R1 answers",
    ),
}
DEFAULT_PRESET = "numina-tir"


def build(
    frame,
    origin: str,
    preset: Preset,
    *,
    preset_name: str = "custom",
) -> tuple[list[dict[str, Any]], BuildSummary]:
    needed = [preset.problem_col, preset.answer_col] + ([preset.difficulty_col] if preset.difficulty_col else [])
    require_columns(frame, needed, origin)
    summary = BuildSummary(name=f"nt ({preset_name})", origin=origin, rows_read=len(frame))
    kept = UniqueBoxedRows(summary, DATA_SOURCE)
    for i, record in enumerate(progress(frame.to_dict("records"), total=len(frame), desc="nt")):
        at = where(origin, i)
        with at_row(at):
            _add_row(record, at, preset, kept, summary)
    return kept.rows, summary


def _add_row(record: dict[str, Any], at: str, preset: Preset, kept: UniqueBoxedRows, summary: BuildSummary) -> None:
    question = as_text(record[preset.problem_col], preset.problem_col)
    if question is None:
        summary.drops.drop(f"empty {preset.problem_col}", at)
        return
    raw_answer = as_text(record[preset.answer_col], preset.answer_col)
    answer = last_boxed(raw_answer) if (raw_answer and preset.answer_from_boxed) else raw_answer
    if answer is None:
        reason = "no \\boxed{} answer in " if preset.answer_from_boxed and raw_answer else "empty "
        summary.drops.drop(reason + preset.answer_col, at)
        return
    extra: dict[str, Any] = {"source": preset.source}
    if preset.difficulty_col:
        try:
            difficulty = float(record[preset.difficulty_col])
        except (TypeError, ValueError):
            summary.drops.drop(f"unparseable {preset.difficulty_col}", at)
            return
        if difficulty != difficulty:  # NaN
            summary.drops.drop(f"missing {preset.difficulty_col}", at)
            return
        if preset.difficulty_min is not None and difficulty < preset.difficulty_min:
            summary.drops.drop(f"{preset.difficulty_col} < {preset.difficulty_min}")
            return
        if preset.difficulty_max is not None and difficulty > preset.difficulty_max:
            summary.drops.drop(f"{preset.difficulty_col} > {preset.difficulty_max}")
            return
        extra["difficulty"] = difficulty
    kept.add(question, answer, extra)


def resolve_preset(args: argparse.Namespace) -> tuple[str, Preset]:
    """The preset with every explicitly given flag applied on top."""
    if args.source is not None and (args.problem_col is None or args.answer_col is None):
        raise DataPrepError(
            "--source needs --problem-col and --answer-col (the preset's columns belong to its own set)"
        )
    name = args.preset
    base = PRESETS[name]
    if args.source is not None:
        # another set: none of the preset's column or filter choices apply to it
        name = "custom"
        base = Preset(source=args.source, problem_col=args.problem_col, answer_col=args.answer_col)
    overrides = {
        "source": args.source,
        "problem_col": args.problem_col,
        "answer_col": args.answer_col,
        "split": args.split,
        "config": args.config,
        "difficulty_col": args.difficulty_col,
        "difficulty_min": args.difficulty_min,
        "difficulty_max": args.difficulty_max,
    }
    fields = {k: v for k, v in overrides.items() if v is not None}
    if args.answer_from_boxed is not None:
        fields["answer_from_boxed"] = args.answer_from_boxed
    if fields and name != "custom":
        name = f"{name}+overrides"
    values = {**base.__dict__, **fields}
    preset = Preset(**values)
    for flag, bound in (("--difficulty-min", args.difficulty_min), ("--difficulty-max", args.difficulty_max)):
        if bound is not None and not math.isfinite(bound):
            raise DataPrepError(f"{flag} {bound}: must be a finite number (nan would filter nothing)")
        if bound is not None and not preset.difficulty_col:
            raise DataPrepError(f"{flag} needs --difficulty-col: {name} has no difficulty column to filter on")
    return name, preset


def parser() -> argparse.ArgumentParser:
    presets = "; ".join(f"{k}: {v.source} ({v.note})" for k, v in PRESETS.items())
    p = argparse.ArgumentParser(
        prog="python -m data_prep.nt", description=__doc__.split("\n\n")[0], epilog=f"presets -- {presets}"
    )
    add_common_args(p)
    p.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET, help=f"default: {DEFAULT_PRESET}")
    p.add_argument("--source", default=None, help="hub dataset id (replaces the preset's; needs the column flags)")
    p.add_argument("--config", default=None, help="hub dataset config name")
    p.add_argument("--split", default=None, help="hub split (preset default: train)")
    p.add_argument("--problem-col", default=None, help="column with the problem text")
    p.add_argument("--answer-col", default=None, help="column with the final answer")
    p.add_argument(
        "--answer-from-boxed",
        default=None,
        action=argparse.BooleanOptionalAction,
        help="the answer column is a solution: take its last \\boxed{}",
    )
    p.add_argument("--difficulty-col", default=None, help="numeric column to filter on")
    p.add_argument("--difficulty-min", type=float, default=None, help="keep rows with difficulty >= this")
    p.add_argument("--difficulty-max", type=float, default=None, help="keep rows with difficulty <= this")
    return p


def _main(args: argparse.Namespace) -> None:
    name, preset = resolve_preset(args)
    check_outputs({"--output": args.output}, args.overwrite, inputs={"--input": args.input})
    frame, origin = load_source(args.input, preset.source, split=preset.split, config=preset.config, limit=args.limit)
    rows, summary = build(frame, origin, preset, preset_name=name)
    finish(summary, {args.output: rows}, args.overwrite)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
