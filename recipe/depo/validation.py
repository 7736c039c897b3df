"""Start-up checks of a composed run config: the ``depo:`` block's own fields (its dataclasses) plus
what DEPO needs from the rest of the config. Every problem is collected and reported at once, one
line each, starting with the key at fault. The config alone, no data: ``preflight.check_training_start``
(the one start-up check the entry point runs, once, before Ray) calls ``validate`` and then reads
the data files. The trainer only parses its settings (``run_settings``)."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from typing import Any

from omegaconf import DictConfig, OmegaConf

from recipe.depo.advantage import GROUP_ESTIMATORS
from recipe.depo.config import DEPOConfig, parse
from recipe.depo.config_fields import DEPOConfigError, is_int

__all__ = [
    "DEPOConfigError",
    "validate",
    "run_settings",
    "check_backbone",
    "looks_like_hub_id",
    "custom_reward_function",
]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

Problems = list[tuple[str, str]]


def _get(config: Any, path: str, default: Any = None) -> Any:
    return OmegaConf.select(config, path, default=default) if isinstance(config, DictConfig) else default


def looks_like_hub_id(name: str) -> bool:
    return bool(_HUB_ID.match(name)) and not name.startswith((".", "~")) and ".." not in name


def check_backbone(backbone: Any) -> str | None:
    """Why ``backbone`` is neither an existing encoder directory nor a hub id, or None if it is one."""
    if not isinstance(backbone, str) or not backbone.strip():
        return f"must be a local directory or a hub id, got {backbone!r}"
    expanded = os.path.expanduser(backbone)
    if os.path.isdir(expanded):
        return None
    if os.path.exists(expanded):
        return f"{backbone!r} is a file; it must be a directory holding an HF encoder and its tokenizer"
    if os.path.isabs(expanded) or backbone.startswith((".", "~")) or backbone.count("/") > 1:
        return f"{backbone!r} does not exist (and is not a hub id like 'distilbert-base-uncased')"
    if not looks_like_hub_id(backbone):
        return f"{backbone!r} is neither an existing directory nor a valid hub id"
    return None


def custom_reward_function(config: DictConfig) -> tuple[str | None, Any]:
    """The custom reward block verl will load and the key it is under, or ``(None, None)`` when
    none is set and verl's built-in scorer runs. verl moves the legacy top-level block under
    ``reward.*`` at run time, so it counts when ``reward.*`` has no path."""
    for key in ("reward.custom_reward_function", "custom_reward_function"):
        if _get(config, f"{key}.path", None):
            return key, _get(config, key)
    return None, None


def _module_path_problem(path: str) -> str | None:
    """verl loads reward functions from ``pkg://dotted.module`` or a (``file://``) file path."""
    if path.startswith("pkg://"):
        module = path[len("pkg://") :].replace("/", ".")
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        return None if found else f"module {module!r} is not importable"
    if path.startswith("file://"):
        path = path[len("file://") :]
    return None if os.path.isfile(os.path.expanduser(path)) else f"{path!r} does not exist"


def _reward_problems(config: DictConfig, acc_key: str) -> Problems:
    """The reward must give per-response correctness under ``acc_key``."""
    problems: Problems = []
    for rm_key in ("reward.reward_model.enable", "reward_model.enable"):
        if _get(config, rm_key, False):
            problems.append(
                (
                    rm_key,
                    f"DEPO labels need per-response correctness (depo.labels.acc_key={acc_key!r}), which a reward "
                    "model does not produce; use a rule-based reward function (reward.custom_reward_function.path)",
                )
            )
    key, spec = custom_reward_function(config)
    if spec is not None:
        problem = _module_path_problem(str(spec.get("path")))
        return problems + ([(f"{key}.path", problem)] if problem else [])
    if acc_key != "acc":
        return problems + [
            (
                "reward.custom_reward_function.path",
                f"unset, so verl's built-in scorer is used, which never returns {acc_key!r}",
            )
        ]
    # verl's built-in scorer returns `acc` for some data sources only: the data check
    # (preflight) reads them from the training files.
    return problems


def _batch_problems(config: DictConfig, depo: DEPOConfig) -> tuple[Problems, int | None]:
    """Batch sizes against the scan cap; returns the cap that ``max_scan=null`` stands for."""
    problems: Problems = []
    batch = _get(config, "data.train_batch_size", None)
    if not is_int(batch) or batch <= 0:
        return [("data.train_batch_size", f"must be a positive int, got {batch!r}")], None
    gen_batch = _get(config, "data.gen_batch_size", None)
    if gen_batch is not None and (not is_int(gen_batch) or gen_batch <= 0):
        problems.append(("data.gen_batch_size", f"must be a positive int or null, got {gen_batch!r}"))
        gen_batch = None
    max_scan = depo.filter.resolved(batch).max_scan
    if max_scan < batch:
        problems.append(
            (
                "depo.filter.max_scan",
                f"{max_scan} is below data.train_batch_size={batch}: a step could never be filled from scanned prompts",
            )
        )
    chunk = gen_batch or batch
    if depo.uses_filter and chunk > max_scan:
        problems.append(
            (
                "data.gen_batch_size",
                f"{chunk} prompts per dataloader fetch exceed depo.filter.max_scan={max_scan}; the refill draws "
                "whole fetches, so lower data.gen_batch_size or raise the cap",
            )
        )
    return problems, max_scan


TRAINER_MODES = ("sync", "colocate_async", "separate_async")


def _mode_problems(config: DictConfig) -> Problems:
    """verl's V1 trainer modes DEPO runs in, and the settings of theirs it cannot honour."""
    mode = _get(config, "trainer.v1.trainer_mode", "sync")
    if mode not in TRAINER_MODES:
        return [
            (
                "trainer.v1.trainer_mode",
                f"{mode!r} is not a verl 0.9.1 V1 trainer mode DEPO runs in; use one of {', '.join(TRAINER_MODES)}",
            )
        ]
    problems: Problems = []
    if _get(config, "skip.rollout_tq.enable", False):
        # replayed rollouts never pass the intake: their prompts have no prediction to learn against
        problems.append(
            ("skip.rollout_tq.enable", "replays dumped rollouts that DEPO's filter never scored; set it false")
        )
    if mode != "sync" and _get(config, "depo.filter.mode", "filter") == "shadow":
        # shadow mode compares each step's would-be rejections with that same step's outcomes
        problems.append(
            ("depo.filter.mode", f"shadow runs in trainer.v1.trainer_mode=sync only, not {mode!r}; use filter")
        )
    if mode == "separate_async":
        # verl asserts these inside the task runner, after Ray and the workers started; say so at start
        backend = _get(config, "actor_rollout_ref.rollout.checkpoint_engine.backend", "naive")
        if backend == "naive":
            problems.append(
                (
                    "actor_rollout_ref.rollout.checkpoint_engine.backend",
                    "separate_async syncs weights to rollout devices of their own; verl refuses 'naive' there "
                    "(use nccl, nixl, mooncake, ...)",
                )
            )
        sync_step = _get(config, "trainer.v1.separate_async.parameter_sync_step", 1)
        batch = _get(config, "data.train_batch_size", None)
        mini = _get(config, "actor_rollout_ref.actor.ppo_mini_batch_size", None)
        if is_int(sync_step) and is_int(batch) and is_int(mini) and batch != sync_step * mini:
            problems.append(
                (
                    "trainer.v1.separate_async.parameter_sync_step",
                    f"verl needs data.train_batch_size ({batch}) == parameter_sync_step ({sync_step}) x "
                    f"actor_rollout_ref.actor.ppo_mini_batch_size ({mini})",
                )
            )
    return problems


def _run_problems(config: DictConfig, depo: DEPOConfig) -> Problems:
    """What DEPO needs from verl's trainer, rollout, algorithm and reward settings."""
    problems: Problems = []
    if not _get(config, "trainer.use_v1", False):
        problems.append(("trainer.use_v1", "DEPO runs on verl's V1 trainer; set trainer.use_v1=true"))
    problems += _mode_problems(config)
    n = _get(config, "actor_rollout_ref.rollout.n", 1)
    if not is_int(n) or n < 2:
        problems.append(("actor_rollout_ref.rollout.n", f"mean@k labels and GRPO groups need n >= 2, got {n!r}"))
    estimator_name = str(_get(config, "algorithm.adv_estimator", "grpo"))
    if depo.advantage_filter.mask_zero_adv_groups and estimator_name not in GROUP_ESTIMATORS:
        problems.append(
            (
                "algorithm.adv_estimator",
                f"{estimator_name!r} is not a group-baseline estimator, so depo.advantage_filter."
                f"mask_zero_adv_groups has no zero-advantage groups to mask; use one of {sorted(GROUP_ESTIMATORS)}",
            )
        )
    if not depo.uses_filter:
        return problems
    # A history-only selector (greso, posterior) starts no estimator, but learns from the same labels.
    backbone_problem = check_backbone(depo.estimator.backbone) if depo.uses_estimator else None
    if backbone_problem:
        problems.append(("depo.estimator.backbone", backbone_problem))
    if depo.labels.logprob_source == "rollout_log_probs" and not _get(
        config, "actor_rollout_ref.rollout.calculate_log_probs", False
    ):
        problems.append(
            (
                "depo.labels.logprob_source",
                "rollout_log_probs needs actor_rollout_ref.rollout.calculate_log_probs=true (otherwise the distill "
                "target would be built from missing log-probs)",
            )
        )
    return problems + _reward_problems(config, depo.labels.acc_key)


def validate(config: DictConfig) -> DEPOConfig:
    """The run's ``DEPOConfig`` with ``depo.filter.max_scan`` resolved, or a ``DEPOConfigError``
    listing every problem of the config."""
    depo, problems = parse(_get(config, "depo", None))
    batch_problems, max_scan = _batch_problems(config, depo)
    problems += batch_problems
    if depo.enable:
        problems += _run_problems(config, depo)
    if problems:
        raise DEPOConfigError(problems)
    return dataclasses.replace(depo, filter=dataclasses.replace(depo.filter, max_scan=max_scan))


def run_settings(config: DictConfig) -> DEPOConfig:
    """The run's ``DEPOConfig`` with ``depo.filter.max_scan`` resolved, for a config the start-up
    check has passed (the trainer, in the task runner's process): parsed, not checked again."""
    depo, problems = parse(_get(config, "depo", None))
    if problems:
        raise DEPOConfigError(problems)
    return dataclasses.replace(depo, filter=depo.filter.resolved(config.data.train_batch_size))
