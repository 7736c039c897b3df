"""The start-up check (``check_training_start``): the config (``validation.validate``), then the
data a DEPO run will score, once, before Ray starts.

Without them a train file whose rows lack ``reward_model.ground_truth`` starts, builds its
workers and dies minutes later with "no materializable trajectories" (the ``KeyError`` only in a
worker log), and a ``depo.labels.acc_key`` the reward never returns is found after a full step.
Both are visible from the files and one call of the reward function:

* every row of every local parquet in ``data.train_files`` / ``data.val_files`` has a
  ``data_source`` and a ``reward_model.ground_truth`` that is not missing, empty or NaN (with
  ``recipe.depo.reward``: a string or a list of strings, alternatives in ``extra_info.answers``
  too, as its ``reference_answers`` requires);
* the configured reward function, called the way verl calls it on a sample of training rows
  (one per data source, plus the first rows), returns a dict with ``depo.labels.acc_key`` holding
  a number in [0, 1], whatever the answer (an empty response is used: it costs nothing and
  starts no math-verify process); with verl's built-in scorer, every data source of the training
  files is one it returns ``acc`` for.

Failures are ``PreflightError`` with one line naming the file, the row and the key. Remote
files (hdfs://, s3://) are left to verl.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from omegaconf import DictConfig, OmegaConf

from recipe.depo.estimator.cost import warn_if_slow
from recipe.depo.validation import custom_reward_function, validate

if TYPE_CHECKING:
    from recipe.depo.config import DEPOConfig

logger = logging.getLogger(__name__)

# Rows per train file the reward function is called on (the first of each data source, then the
# first rows): enough to catch a wrong acc_key or an unknown data_source, cheap with any reward.
SAMPLE_ROWS = 8
_REMOTE_PREFIXES = ("hdfs://", "s3://", "gs://", "http://", "https://")
# data_source values for which verl's built-in scorer (no custom reward function) returns a
# dict with an `acc` key (verl.utils.reward_score.default_compute_score -> math_dapo).
VERL_ACC_SOURCES = ("math_dapo", "math", "math_dapo_reasoning")


class PreflightError(ValueError):
    """Training data or reward that cannot work; the message names the file, row and key."""


class RewardFunction(NamedTuple):
    fn: Callable[..., Any]
    name: str  # for messages
    ours: bool  # recipe.depo.reward.compute_score, whose stricter reference rules then apply
    builtin: bool  # verl's default_compute_score (no custom reward function set)


def check_training_start(config: DictConfig) -> DEPOConfig:
    """The run's ``DEPOConfig`` (``validate``'s ``DEPOConfigError`` for a bad config), after a
    ``PreflightError`` unless every local data row has a usable reference and the reward returns
    ``depo.labels.acc_key`` (the latter only when DEPO's filter learns from labels)."""
    settings = validate(config)
    warn_if_slow(config)  # before the data: a user fixing a data path still sees the cost warning
    reward = _reward_function(config)
    for key, needs_labels in (("data.train_files", settings.uses_filter), ("data.val_files", False)):
        for path in _local_files(config, key):
            _check_file(path, key, reward, settings.labels.acc_key if needs_labels else None)
    return settings


def _local_files(config: DictConfig, key: str) -> list[str]:
    files = OmegaConf.select(config, key, default=None)
    if files is None:
        return []
    files = [files] if isinstance(files, str) else list(files)
    local = []
    for f in files:
        f = str(f)
        if f.startswith(_REMOTE_PREFIXES):
            logger.info("%s: %s is remote; its rows are checked by verl when it loads them", key, f)
            continue
        path = os.path.expanduser(f)
        if not os.path.isfile(path):
            raise PreflightError(f"{key}: {f} does not exist (or is not a file)")
        local.append(path)
    return local


def _reward_function(config: DictConfig) -> RewardFunction:
    """The function verl's reward loop will call."""
    from verl.trainer.ppo.reward import get_custom_reward_fn

    _, spec = custom_reward_function(config)
    if spec is None:
        from verl.utils.reward_score import default_compute_score

        return RewardFunction(default_compute_score, "verl's default_compute_score", ours=False, builtin=True)
    fn = get_custom_reward_fn(OmegaConf.create({"reward": {"custom_reward_function": spec}}))
    raw = fn.args[0] if getattr(fn, "args", None) else fn  # verl wraps it in partial(_call_with_kwargs, raw, kw)
    # also when verl loaded reward.py from a file path, as a module of its own
    ours = getattr(raw, "__name__", "") == "compute_score" and callable(
        getattr(raw, "__globals__", {}).get("reference_answers")
    )
    return RewardFunction(fn, f"{spec.get('path')}:{spec.get('name')}", ours=ours, builtin=False)


def _check_file(path: str, key: str, reward: RewardFunction, acc_key: str | None) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from recipe.depo.reward import reference_answers

    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # not parquet, truncated, unreadable
        raise PreflightError(f"{key}: {path} is not a readable parquet file ({exc})") from None
    for column in ("data_source", "reward_model"):
        if column not in schema.names:
            raise PreflightError(f"{key}: {path} has no {column!r} column (found {schema.names})")
    has_extra = "extra_info" in schema.names
    table = pq.read_table(path, columns=["data_source", "reward_model"] + (["extra_info"] if has_extra else []))
    if table.num_rows == 0:
        raise PreflightError(f"{key}: {path} has no rows")
    sources = table.column("data_source").to_pylist()
    if reward.builtin and acc_key == "acc":
        bad = sorted(
            {s for s in sources if isinstance(s, str) and s not in VERL_ACC_SOURCES and not s.startswith("aime")}
        )
        if bad:
            raise PreflightError(
                f"reward.custom_reward_function.path: unset, and verl's built-in scorer returns no {acc_key!r} for "
                f"data_source {bad[:5]} ({key}: {path}); set it to recipe/depo/reward.py (name compute_score), "
                "whose result carries 'acc' for every source"
            )
    reward_models = table.column("reward_model").to_pylist()
    # Only extra_info.answers (alternative references) matters here; converting the whole struct
    # would turn every problem text of a large file into Python strings.
    answers = [None] * table.num_rows
    if has_extra:
        extra = table.column("extra_info")
        if pa.types.is_struct(extra.type) and extra.type.get_field_index("answers") >= 0:
            answers = pc.struct_field(extra, "answers").to_pylist()

    for row, (source, reward_model) in enumerate(zip(sources, reward_models)):
        where = f"{key}: {path} row {row}"
        if not isinstance(source, str) or not source:
            raise PreflightError(f"{where}: data_source is {source!r}")
        if not isinstance(reward_model, dict) or "ground_truth" not in reward_model:
            found = sorted(reward_model) if isinstance(reward_model, dict) else type(reward_model).__name__
            raise PreflightError(f"{where}: reward_model has no 'ground_truth' key (found {found})")
        truth = reward_model["ground_truth"]
        if reward.ours:
            try:
                reference_answers(truth, {"answers": answers[row]})
            except ValueError as exc:
                raise PreflightError(f"{where} (data_source {source!r}): {exc}") from None
        elif truth is None or (isinstance(truth, str) and not truth.strip()) or _is_nan(truth):
            raise PreflightError(f"{where} (data_source {source!r}): reward_model.ground_truth is {truth!r}")

    if acc_key is None:
        return
    for row in _sample_rows(sources):
        where = f"{key}: {path} row {row}"
        try:
            result = reward.fn(
                data_source=sources[row],
                solution_str="",
                ground_truth=reward_models[row]["ground_truth"],
                extra_info=_extra_info(table, row) if has_extra else {},
            )
            if inspect.isawaitable(result):
                result = asyncio.run(result)
        except Exception as exc:
            raise PreflightError(
                f"{where} (data_source {sources[row]!r}): the reward function {reward.name} raised "
                f"{type(exc).__name__}: {exc}"
            ) from None
        value = result.get(acc_key) if isinstance(result, dict) else None
        if value is None:
            returned = sorted(result) if isinstance(result, dict) else f"a {type(result).__name__}, not a dict"
            raise PreflightError(
                f"depo.labels.acc_key={acc_key!r}: the reward function {reward.name} returns no such key "
                f"(it returned {returned} for {where}, data_source {sources[row]!r})"
            )
        if isinstance(value, bool):
            value = float(value)
        if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
            raise PreflightError(
                f"depo.labels.acc_key={acc_key!r}: the reward function {reward.name} returned {value!r} for "
                f"{where}; the estimator's labels need per-response correctness in [0, 1]"
            )


def _extra_info(table, row: int) -> dict:
    value = table.column("extra_info")[row].as_py()
    return value if isinstance(value, dict) else {}


def _sample_rows(sources: list[str]) -> list[int]:
    first_of_source: dict[str, int] = {}
    for row, source in enumerate(sources):
        first_of_source.setdefault(source, row)
    rows = list(first_of_source.values())[:SAMPLE_ROWS]
    rows += [r for r in range(min(SAMPLE_ROWS, len(sources))) if r not in rows]
    return sorted(rows[:SAMPLE_ROWS])


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
