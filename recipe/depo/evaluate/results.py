"""Evaluate's outputs: one JSON line per query in ``DIR/<set>.jsonl``, and the per-set summary.

Lines are appended a batch at a time with one ``write`` on an ``O_APPEND`` descriptor followed by
``fsync``, so an interrupted run leaves whole lines; a torn last line (power loss mid-write) is
cut off when the file is next opened, and its query is evaluated again.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from recipe.depo.evaluate.data import EvalError, EvalQuery
from recipe.depo.fsutil import write_text_atomic

logger = logging.getLogger(__name__)

# Pretty names for the paper's five sets (Table 1's column order); any other set keeps its name.
PAPER_SETS = {
    "gsm8k": "GSM8K",
    "math500": "MATH-500",
    "amc23": "AMC23",
    "olympiadbench": "OlympiadBench",
    "minerva": "Minerva",
}


def ordered_sets(names: Iterable[str]) -> list[str]:
    """The paper's sets first in Table 1's order, then the others alphabetically."""
    names = set(names)
    return [s for s in PAPER_SETS if s in names] + sorted(names - set(PAPER_SETS))


def display_name(name: str) -> str:
    return PAPER_SETS.get(name, name)


@dataclass(frozen=True)
class QueryResult:
    index: int
    data_source: str
    prompt_hash: str
    n: int
    num_correct: float
    acc: float
    mean_response_length: float

    @classmethod
    def from_scores(cls, query: EvalQuery, accs: list[float], lengths: list[int]) -> QueryResult:
        total = float(sum(accs))
        return cls(
            index=query.index,
            data_source=query.data_source,
            prompt_hash=query.prompt_hash,
            n=len(accs),
            num_correct=int(total) if total.is_integer() else total,
            acc=total / len(accs),
            mean_response_length=sum(lengths) / len(lengths),
        )


def read_results(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """The complete lines of a results file. A last line without its newline is an interrupted
    write: dropped (and cut from the file when ``repair``). Any other bad line is an error."""
    if not path.exists():
        return []
    try:
        raw = path.read_bytes()
    except OSError as exc:  # a folder in its place, no permission
        raise EvalError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    complete, _, torn = raw.rpartition(b"\n")
    if torn:
        logger.warning(f"{path}: dropping an incomplete last line (interrupted write); that query runs again")
        if repair:
            with open(path, "r+b") as handle:
                handle.truncate(len(raw) - len(torn))
    records = []
    for number, line in enumerate(complete.decode("utf-8").split("\n") if complete else [], start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise EvalError(f"{path} line {number} is not JSON; is this an evaluate output folder?") from None
        if not isinstance(record, dict) or "index" not in record:
            raise EvalError(f"{path} line {number}: expected an object with 'index'")
        for key, high in (("acc", 1.0), ("mean_response_length", math.inf)):
            value = record.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= high:
                raise EvalError(f"{path} line {number}: '{key}' must be a number in [0, {high}], got {value!r}")
        records.append(record)
    return records


def append_results(path: Path, results: list[QueryResult]) -> None:
    """Append whole lines in one write, then fsync (see the module docstring)."""
    if not results:
        return
    payload = "".join(json.dumps(asdict(r)) + "\n" for r in results).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        written = os.write(fd, payload)
        if written != len(payload):  # a full disk: leave no partial line behind
            os.ftruncate(fd, os.fstat(fd).st_size - written)
            raise OSError(f"{path}: short write ({written} of {len(payload)} bytes)")
        os.fsync(fd)
    finally:
        os.close(fd)


def set_summary(records: list[Mapping[str, Any]], total: int | None = None) -> dict[str, Any]:
    """Avg@n of one set in percent: the mean over queries of each query's accuracy over its n
    samples. ``total``: the set's size when known; fewer results than that make the set partial."""
    partial = total is not None and len(records) < total
    if not records:
        return {"queries": 0, "total": total, "partial": partial, "acc": None, "mean_response_length": None}
    return {
        "queries": len(records),
        "total": total,
        "partial": partial,
        "acc": 100.0 * sum(float(r["acc"]) for r in records) / len(records),
        "mean_response_length": sum(float(r["mean_response_length"]) for r in records) / len(records),
    }


def write_summary(output: Path, settings: Mapping[str, Any], per_set: Mapping[str, dict[str, Any]]) -> dict:
    """``summary.json`` + ``summary.md``: per set Avg@n (%) and the unweighted mean over sets (``Avg``,
    Table 1's last accuracy column)."""
    names = ordered_sets(per_set)
    accs = [per_set[s]["acc"] for s in names if per_set[s]["acc"] is not None]
    summary = {
        "settings": dict(settings),
        "sets": {s: per_set[s] for s in names},
        "Avg": sum(accs) / len(accs) if accs else None,
        "partial": any(per_set[s].get("partial") for s in names),
    }
    write_text_atomic(output / "summary.json", json.dumps(summary, indent=2) + "\n")
    n = settings.get("n")
    lines = [
        f"# Avg@{n} of {settings.get('model')}",
        "",
        f"| set | queries | Avg@{n} (%) | mean response length (tokens) |",
        "|---|---|---|---|",
    ]
    for s in names:
        row = per_set[s]
        acc = "–" if row["acc"] is None else f"{row['acc']:.1f}"
        length = "–" if row["mean_response_length"] is None else f"{row['mean_response_length']:.1f}"
        queries = f"{row['queries']} of {row['total']} (partial)" if row.get("partial") else f"{row['queries']}"
        lines.append(f"| {display_name(s)} | {queries} | {acc} | {length} |")
    avg = "–" if summary["Avg"] is None else f"{summary['Avg']:.1f}"
    lines.append(f"| **Avg** | | {avg} | |")
    if summary["partial"]:
        lines += ["", "Partial: some sets have results for only part of their queries (a `--limit` run); rerun "
                  "without `--limit` to finish them."]  # fmt: skip
    write_text_atomic(output / "summary.md", "\n".join(lines) + "\n")
    return summary
