"""The paper's five evaluation sets -> one verl parquet each, all with the same boxed-answer prompt.

    python -m data_prep.eval_sets --output data/eval/            # all five from the hub
    python -m data_prep.eval_sets --output data/eval/ --input local_dir/ --sets gsm8k math500

``--output`` is a directory; it receives ``gsm8k.parquet`` (1,319), ``math500.parquet`` (500),
``amc23.parquet`` (40), ``olympiadbench.parquet`` (674) and ``minerva.parquet`` (272). With
``--input DIR`` each set is read from ``DIR/<name>.parquet|jsonl|json`` in its hub layout. Row
counts are checked against the paper's benchmark sizes and a mismatch is reported as a warning
(expected with ``--limit``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_prep.common import (
    BuildSummary,
    DataPrepError,
    add_common_args,
    as_plain,
    as_text,
    at_row,
    boxed_prompt,
    check_output_dir,
    check_outputs,
    finish,
    load_source,
    make_row,
    require_columns,
    run_cli,
    strip_dollars,
    where,
)


def gsm8k_answer(raw: Any) -> str | None:
    """GSM8K's answer column is a worked solution ending in "#### 1,234": the number after ####."""
    text = as_text(raw, "answer")
    if text is None or "####" not in text:
        return None
    answer = text.rsplit("####", 1)[1].strip().replace(",", "")
    return answer or None


def olympiad_answer(raw: Any) -> str | None:
    """OlympiadBench's final_answer is a list of "$...$" strings; several parts are joined by commas,
    which math-verify reads as a set/tuple like the problems' own multi-answer convention."""
    values = as_plain(raw)
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list):
        return None
    parts = [strip_dollars(t) for t in (as_text(v, "final_answer item") for v in values) if t is not None]
    parts = [p for p in parts if p]
    return ", ".join(parts) if parts else None


@dataclass(frozen=True)
class EvalSet:
    name: str  # file stem and data_source
    hub_id: str
    split: str
    expected_rows: int
    question_col: str
    answer_col: str
    config: str | None = None
    answer_fn: Callable[[Any], str | None] = as_text
    extra_cols: tuple[str, ...] = field(default_factory=tuple)


EVAL_SETS: dict[str, EvalSet] = {
    s.name: s
    for s in (
        EvalSet("gsm8k", "openai/gsm8k", "test", 1319, "question", "answer", config="main", answer_fn=gsm8k_answer),
        EvalSet(
            "math500",
            "HuggingFaceH4/MATH-500",
            "test",
            500,
            "problem",
            "answer",
            extra_cols=("subject", "level", "unique_id"),
        ),
        EvalSet("amc23", "math-ai/amc23", "test", 40, "question", "answer", extra_cols=("id", "url")),
        EvalSet(
            "olympiadbench",
            "Hothan/OlympiadBench",
            "train",
            674,
            "question",
            "final_answer",
            config="OE_TO_maths_en_COMP",
            answer_fn=olympiad_answer,
            extra_cols=("id", "subfield", "answer_type", "unit"),
        ),
        EvalSet("minerva", "math-ai/minervamath", "test", 272, "question", "answer"),
    )
}


def build_set(spec: EvalSet, frame, origin: str) -> tuple[list[dict[str, Any]], BuildSummary]:
    require_columns(frame, [spec.question_col, spec.answer_col], origin)
    summary = BuildSummary(name=spec.name, origin=origin, rows_read=len(frame))
    rows: list[dict[str, Any]] = []
    for i, record in enumerate(frame.to_dict("records")):
        at = where(origin, i)
        with at_row(at):
            question = as_text(record[spec.question_col], spec.question_col)
            raw_answer = record[spec.answer_col]
            if question is None:
                answer = None
            elif spec.answer_fn is as_text:
                answer = as_text(raw_answer, spec.answer_col)
            else:
                answer = spec.answer_fn(raw_answer)
        if question is None:
            summary.drops.drop(f"empty {spec.question_col}", at)
            continue
        if answer is None:
            summary.drops.drop(f"empty or unparseable {spec.answer_col}", at)
            continue
        extra = {col: _scalar(record[col]) for col in spec.extra_cols if col in record}
        rows.append(
            make_row(
                data_source=spec.name,
                prompt_text=boxed_prompt(question),
                question=question,
                ground_truth=answer,
                index=len(rows),
                split="test",
                extra=extra,
            )
        )
    if len(rows) != spec.expected_rows:
        summary.warn(f"{spec.name}: {len(rows)} rows, the paper evaluates on {spec.expected_rows}")
    return rows, summary


def _scalar(value: Any) -> Any:
    # parquet wants one type per column: stringify whatever is not already a plain scalar
    value = as_plain(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value if not isinstance(value, float) or value == value else None
    return str(value)


def _local_file(directory: Path, name: str) -> Path:
    for suffix in (".parquet", ".jsonl", ".json"):
        candidate = directory / f"{name}{suffix}"
        if candidate.exists():
            return candidate
    raise DataPrepError(f"--input {directory}: no {name}.parquet, {name}.jsonl or {name}.json in it")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data_prep.eval_sets", description=__doc__.split("\n\n")[0])
    add_common_args(p, output_help="output directory (one <set>.parquet per set)")
    p.add_argument(
        "--sets", nargs="+", choices=sorted(EVAL_SETS), default=list(EVAL_SETS), help="which sets (default: all five)"
    )
    return p


def _main(args: argparse.Namespace) -> None:
    out_dir = check_output_dir(args.output)
    targets = {name: out_dir / f"{name}.parquet" for name in args.sets}
    input_dir = Path(args.input) if args.input else None
    if input_dir is not None and not input_dir.is_dir():
        raise DataPrepError(f"--input {input_dir}: eval_sets reads a directory holding <set>.parquet|jsonl|json")
    local_files = {name: _local_file(input_dir, name) if input_dir else None for name in targets}
    check_outputs(
        {f"the {name} output": path for name, path in targets.items()},
        args.overwrite,
        inputs={f"--input {name}": path for name, path in local_files.items()},
    )
    # Every set is built before any is written: one bad set leaves the directory as it was, and
    # the rerun after fixing it does not trip over sets written by the failed run.
    outputs, summaries = {}, []
    for name, path in targets.items():
        spec = EVAL_SETS[name]
        local = local_files[name]
        frame, origin = load_source(local, spec.hub_id, split=spec.split, config=spec.config, limit=args.limit)
        rows, summary = build_set(spec, frame, origin)
        outputs[path] = rows
        summaries.append(summary)
    finish(summaries, outputs, args.overwrite)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
