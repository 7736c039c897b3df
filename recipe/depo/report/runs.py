"""Reading a run directory: verl's file-logger metrics, the run's composed config, evaluate's summary.

A run directory (what every launcher writes, see ``examples/``) holds

* ``metrics.jsonl``: verl's ``file`` logger (``VERL_FILE_LOGGER_PATH``), one ``{"step", "data"}``
  object per training step and per validation-only record. verl truncates that file when a run
  starts, so the launchers move a previous run's file aside as ``metrics.<unix time>.jsonl``
  before resuming; the parts are read oldest first and a later part replaces the steps it redid.
* ``config.yaml``: the composed config hydra saves (``hydra.run.dir`` = the run directory).
* optionally ``eval/summary.json`` from ``python -m recipe.depo.evaluate --output RUN/eval``,
  ``eval_steps/step_N/`` (the same for the checkpoint of step N, as ``benchmarks/learning_cpu.py``
  writes them: the run's validation curve when it has them), and
  ``rollouts/<step>.jsonl`` from ``trainer.rollout_data_dir`` (used for the zero-advantage share
  of runs whose metrics do not carry ``depo/zero_adv_group_frac``, e.g. verl's own ``main_ppo``).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recipe.depo.evaluate.data import EvalError
from recipe.depo.report.seeds import mean_se

logger = logging.getLogger(__name__)

METRICS = "metrics.jsonl"
CONFIG = "config.yaml"
EVAL_STEPS = "eval_steps"  # RUN/eval_steps/step_N: recipe.depo.evaluate's output for the checkpoint of step N
_PART = re.compile(r"^metrics\.(\d+)\.jsonl$")


class ReportError(EvalError):
    """A run directory the report cannot read; the message names the file (and line)."""


def is_training(data: dict) -> bool:
    return "training/global_step" in data or "timing_s/step" in data


def is_validation(data: dict) -> bool:
    return any(key.startswith("val-core/") for key in data)


def _clean(value: Any) -> Any:
    # verl's logger writes NaN as null (orjson); both mean "not measured this step"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def read_metrics_file(path: Path) -> list[tuple[int, dict]]:
    """``(step, data)`` per record. A line that is not a JSON record is an error naming the file
    and line, except an unterminated last line (the run was killed mid-write), which is dropped."""
    raw = _read_bytes(path, "metrics (verl's file logger)")
    lines = raw.split(b"\n")
    torn = lines.pop() if lines else b""
    if torn.strip():
        logger.warning(f"{path}: last line is incomplete (the run stopped mid-write); ignored")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ReportError(f"{path} line {number} is not JSON (expected verl's file-logger output)") from None
        if (
            not isinstance(record, dict)
            or not isinstance(record.get("data"), dict)
            or isinstance(record.get("step"), bool)
            or not isinstance(record.get("step"), int)
        ):
            raise ReportError(f'{path} line {number}: expected {{"step": int, "data": {{...}}}}')
        records.append((record["step"], {k: _clean(v) for k, v in record["data"].items()}))
    return records


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:  # a directory in its place, no permission, ...
        raise ReportError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None


def metrics_parts(run_dir: Path) -> list[Path]:
    parts = sorted(
        (p for p in run_dir.glob("metrics.*.jsonl") if _PART.match(p.name)),
        key=lambda p: int(_PART.match(p.name).group(1)),
    )
    if (run_dir / METRICS).exists():
        parts.append(run_dir / METRICS)
    return parts


@dataclass
class RunData:
    name: str
    path: Path
    steps: dict[int, dict] = field(default_factory=dict)  # training step -> metrics
    validations: dict[int, dict] = field(default_factory=dict)  # step -> metrics of that record
    config: dict[str, Any] = field(default_factory=dict)
    eval_summary: dict | None = None
    rollout_dir: Path | None = None
    # step -> the checkpoint's evaluation (eval_steps/step_N), read by read_checkpoint_evals
    checkpoint_evals: dict[int, CheckpointEval] = field(default_factory=dict)


@dataclass
class CheckpointEval:
    """One checkpoint evaluated after training: accuracy per set (%), and the standard error of
    their mean over the evaluated queries (each query's accuracy over its samples first), in points."""

    sets: dict[str, float]
    se: float | None


def merge_parts(parts: list[list[tuple[int, dict]]]) -> tuple[dict[int, dict], dict[int, dict]]:
    """Training steps and validations over the parts of a resumed run. A resumed run redoes the
    steps after its checkpoint, so a later part replaces everything from its first training step on."""
    steps: dict[int, dict] = {}
    validations: dict[int, dict] = {}
    for records in parts:
        trained = [step for step, data in records if is_training(data)]
        if trained:
            first = min(trained)
            steps = {s: d for s, d in steps.items() if s < first}
            validations = {s: d for s, d in validations.items() if s < first}
        for step, data in records:
            if is_training(data):
                steps[step] = data
            if is_validation(data):
                validations[step] = data
    return steps, validations


# config keys the report needs (resolved one by one: an unrelated interpolation cannot break it)
CONFIG_KEYS = {
    "n": "actor_rollout_ref.rollout.n",
    "train_batch_size": "data.train_batch_size",
    "n_gpus_per_node": "trainer.n_gpus_per_node",
    "nnodes": "trainer.nnodes",
    "depo_enable": "depo.enable",
    "depo_filter": "depo.filter.enable",
    "estimator_placement": "depo.estimator.placement",
    "warmup_steps": "depo.filter.warmup_steps",
    "selector": "depo.filter.selector.name",
    "filter_mode": "depo.filter.mode",
    "dynamic_sampling": "algorithm.filter_groups.enable",
    "adv_estimator": "algorithm.adv_estimator",
    "device": "trainer.device",
    "trainer_mode": "trainer.v1.trainer_mode",
}


def read_config(path: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.load(path)
    except Exception as exc:
        raise ReportError(f"{path}: not a readable YAML config ({exc})") from None
    out = {}
    for name, key in CONFIG_KEYS.items():
        try:
            out[name] = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
        except Exception:
            out[name] = None
    for name in ("n", "train_batch_size"):
        value = out[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ReportError(f"{path}: {CONFIG_KEYS[name]} must be a positive integer, got {value!r}")
    return out


def read_run(name: str, run_dir: str | Path) -> RunData:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"run {name}: {run_dir} is not a directory")
    parts = metrics_parts(run_dir)
    if not parts:
        raise ReportError(
            f"run {name}: no {METRICS} in {run_dir} (verl's file logger: trainer.logger=[...,file] and "
            f"VERL_FILE_LOGGER_PATH={run_dir / METRICS}; the launchers in examples/ set both)"
        )
    steps, validations = merge_parts([read_metrics_file(p) for p in parts])
    if not steps and not validations:
        raise ReportError(f"run {name}: {', '.join(map(str, parts))} hold no training step or validation")
    if not (run_dir / CONFIG).exists():
        raise ReportError(
            f"run {name}: no {CONFIG} in {run_dir} (the run's composed config; the launchers write it with "
            f"hydra.run.dir={run_dir} hydra.output_subdir=.)"
        )
    run = RunData(name, run_dir, steps, validations, read_config(run_dir / CONFIG))
    summary = run_dir / "eval" / "summary.json"
    if summary.exists():
        try:
            run.eval_summary = json.loads(_read_bytes(summary, "evaluate summary"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ReportError(f"run {name}: {summary} is not JSON") from None
        if not isinstance(run.eval_summary, dict) or not isinstance(run.eval_summary.get("sets"), dict):
            raise ReportError(f"run {name}: {summary} has no 'sets' (expected recipe.depo.evaluate's summary)")
        for set_name, entry in run.eval_summary["sets"].items():
            acc = entry.get("acc") if isinstance(entry, dict) else "missing"
            if acc is not None and (isinstance(acc, bool) or not isinstance(acc, (int, float)) or not 0 <= acc <= 100):
                raise ReportError(f"run {name}: {summary}: sets.{set_name}.acc must be a percentage, got {acc!r}")
    if (run_dir / "rollouts").is_dir():
        run.rollout_dir = run_dir / "rollouts"
    run.checkpoint_evals = read_checkpoint_evals(name, run_dir)
    return run


def read_checkpoint_evals(name: str, run_dir: Path) -> dict[int, CheckpointEval]:
    """step -> :class:`CheckpointEval` from ``run_dir/eval_steps/step_N`` (evaluate's
    ``summary.json`` and its per-query ``<set>.jsonl``); empty when the run has none. A partial or
    unreadable evaluation is an error naming the file: a curve must not mix in a half-done point."""
    evals: dict[int, CheckpointEval] = {}
    for folder in sorted((run_dir / EVAL_STEPS).glob("step_*")):
        summary_path = folder / "summary.json"
        if not folder.name[5:].isdigit() or not summary_path.is_file():
            continue
        summary = _read_json(summary_path, f"run {name}", "evaluate summary")
        sets = summary.get("sets") if isinstance(summary, dict) else None
        if not isinstance(sets, dict) or not sets:
            raise ReportError(f"run {name}: {summary_path} has no 'sets' (expected recipe.depo.evaluate's summary)")
        if summary.get("partial"):
            raise ReportError(
                f"run {name}: {summary_path} is a partial evaluation (evaluate that checkpoint again to finish it)"
            )
        per_query: list[float] = []
        accs: dict[str, float] = {}
        for set_name, entry in sets.items():
            acc = entry.get("acc") if isinstance(entry, dict) else None
            if isinstance(acc, bool) or not isinstance(acc, (int, float)) or not 0 <= acc <= 100:
                raise ReportError(f"run {name}: {summary_path}: sets.{set_name}.acc must be a percentage, got {acc!r}")
            accs[set_name] = float(acc)
            results = folder / f"{set_name}.jsonl"
            if results.is_file():
                for number, line in enumerate(_read_bytes(results, "per-query results").splitlines(), start=1):
                    if not line.strip():
                        continue
                    try:
                        per_query.append(float(json.loads(line)["acc"]))
                    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
                        raise ReportError(f"run {name}: {results} line {number} has no numeric 'acc'") from None
        se = mean_se(per_query)[1] if len(per_query) > 1 else None
        evals[int(folder.name[5:])] = CheckpointEval(accs, None if se is None else 100.0 * se)
    return evals


def _read_json(path: Path, who: str, what: str) -> Any:
    try:
        return json.loads(_read_bytes(path, what))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ReportError(f"{who}: {path} is not JSON") from None


def zero_adv_from_dump(path: Path) -> float | None:
    """Share of prompt groups whose responses all scored the same, from one ``rollout_data_dir``
    dump (verl writes one line per response, ``uid`` = "<prompt uid>_<sample>_<output>")."""
    if not path.exists():
        return None
    groups: dict[str, list[float]] = defaultdict(list)
    try:
        text = _read_bytes(path, "rollout dump").decode("utf-8")
    except UnicodeDecodeError:
        raise ReportError(f"{path}: not UTF-8 text (expected verl's rollout dump)") from None
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ReportError(f"{path}: a line is not JSON (expected verl's rollout dump)") from None
        score = row.get("score", 0.0) if isinstance(row, dict) else None
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise ReportError(f"{path}: a line is not a rollout record with a numeric 'score' (verl's rollout dump)")
        uid = str(row.get("uid", ""))
        key = uid.rsplit("_", 2)[0] if uid.count("_") >= 2 else str(row.get("input", ""))
        groups[key].append(float(score))
    if not groups:
        return None
    return sum(1 for s in groups.values() if len(s) > 1 and max(s) - min(s) <= 1e-6) / len(groups)
