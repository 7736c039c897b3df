"""Evaluation sets: verl-schema parquet files (as ``data_prep.eval_sets`` writes them) -> queries.

A set is one parquet file; its name is the file stem (``gsm8k.parquet`` -> ``gsm8k``). A query is
identified by ``extra_info.index`` (the row number when a row has none), which is how evaluate's
per-query outputs and the router's Table 3 match results across models.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


class EvalError(ValueError):
    """Bad input for evaluate / report / router; the message names the file, row or argument."""


@dataclass(frozen=True)
class EvalQuery:
    index: int
    data_source: str
    messages: list[dict[str, Any]]
    ground_truth: str
    extra_info: dict[str, Any]

    @property
    def prompt_hash(self) -> str:
        return prompt_hash(self.messages)


def _plain(value: Any) -> Any:
    """numpy arrays / scalars from parquet -> plain Python (lists, dicts, str, int, float)."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def prompt_hash(messages: Any) -> str:
    """A short, tokenizer-independent fingerprint of a chat prompt (role and content of each
    message): evaluate stores it per query so a resumed run or the router notices a different
    data file behind the same set name and index."""
    canonical = [{"role": str(m.get("role")), "content": m.get("content")} for m in _plain(messages)]
    payload = json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def parquet_files(paths: Iterable[str | Path], flag: str = "--data") -> dict[str, Path]:
    """Set name -> parquet file for files and folders of files (a folder contributes every
    ``*.parquet`` in it, sorted by name)."""
    files: list[Path] = []
    given = [Path(p) for p in paths]
    if not given:
        raise EvalError(f"{flag}: no file or folder given")
    for path in given:
        if path.is_dir():
            found = sorted(p for p in path.glob("*.parquet") if not p.name.startswith("."))
            if not found:
                raise EvalError(f"{flag} {path}: no .parquet files in this folder")
            files.extend(found)
        elif path.is_file():
            if path.suffix != ".parquet":
                raise EvalError(f"{flag} {path}: expected a .parquet file in verl's RL schema (data_prep.eval_sets)")
            files.append(path)
        else:
            raise EvalError(f"{flag} {path}: no such file or folder")
    sets: dict[str, Path] = {}
    for file in files:
        if file.stem in sets and sets[file.stem].resolve() != file.resolve():
            raise EvalError(f"{flag}: two files give the set name {file.stem!r}: {sets[file.stem]} and {file}")
        sets[file.stem] = file
    return sets


def _ground_truth(value: Any, where: str) -> str:
    reward_model = _plain(value)
    if not isinstance(reward_model, Mapping) or "ground_truth" not in reward_model:
        raise EvalError(f"{where}: reward_model has no 'ground_truth' (expected verl's RL schema, data_prep.eval_sets)")
    truth = reward_model["ground_truth"]
    if isinstance(truth, float) and math.isnan(truth):
        truth = None
    if not isinstance(truth, (str, int)) or isinstance(truth, bool) or not str(truth).strip():
        raise EvalError(f"{where}: reward_model.ground_truth must be a non-empty string, got {truth!r}")
    return str(truth)


def load_set(path: str | Path, limit: int | None = None) -> list[EvalQuery]:
    """Every query of one eval parquet, checked: chat prompt, data source, ground truth, unique index."""
    path = Path(path)
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow's messages do not name the file
        raise EvalError(f"{path}: not a readable parquet file ({exc})") from exc
    if len(frame) == 0:
        raise EvalError(f"{path}: no rows")
    missing = [c for c in ("prompt", "data_source", "reward_model") if c not in frame.columns]
    if missing:
        raise EvalError(f"{path}: missing column(s) {missing} (expected verl's RL schema, data_prep.eval_sets)")
    queries: list[EvalQuery] = []
    seen: dict[int, int] = {}
    for row, record in enumerate(frame.to_dict("records")):
        if limit is not None and len(queries) >= limit:
            break
        where = f"{path} row {row}"
        messages = _plain(record["prompt"])
        if (
            not isinstance(messages, list)
            or not messages
            or not all(isinstance(m, Mapping) and "role" in m and "content" in m for m in messages)
        ):
            raise EvalError(f"{where}: prompt must be a non-empty list of chat messages with 'role' and 'content'")
        data_source = record["data_source"]
        if not isinstance(data_source, str) or not data_source:
            raise EvalError(f"{where}: data_source must be a non-empty string, got {data_source!r}")
        extra_info = _plain(record.get("extra_info"))
        extra_info = extra_info if isinstance(extra_info, dict) else {}
        index = extra_info.get("index", row)
        if isinstance(index, bool) or not isinstance(index, (int, float)) or int(index) != index:
            raise EvalError(f"{where}: extra_info.index must be an integer, got {index!r}")
        index = int(index)
        if index in seen:
            raise EvalError(f"{where}: extra_info.index {index} already used by row {seen[index]}")
        seen[index] = row
        queries.append(
            EvalQuery(index, data_source, messages, _ground_truth(record["reward_model"], where), extra_info)
        )
    return queries
