"""Check a composed config before anything starts, and resolve the ``depo:`` block.

Every refusal is a ``DEPOConfigError`` whose message starts with the offending key, says what it
is and what would be valid. Called by the entry point before Ray starts and again by the trainer
(which may be built without the entry point, e.g. in tests).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from recipe.depo.advantage import GROUP_ESTIMATORS
from recipe.depo.filter import FilterConfig

PLACEMENTS = ("colocated", "separate", "cpu")
LOGPROB_SOURCES = ("old_log_probs", "rollout_log_probs")
# Keys of depo.estimator that configure the worker, not the estimator itself.
WORKER_KEYS = ("placement",)
# data_source values for which verl's built-in scorer (no custom reward function) returns a
# dict with an `acc` key (verl.utils.reward_score.default_compute_score -> math_dapo).
VERL_ACC_SOURCES = ("math_dapo", "math", "math_dapo_reasoning")
DEFAULT_SCAN_FACTOR = 8
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class DEPOConfigError(ValueError):
    pass


@dataclass(frozen=True)
class DEPOSettings:
    enable: bool
    filter_enable: bool
    filter: FilterConfig
    estimator: dict
    placement: str
    acc_key: str
    logprob_source: str
    text_source: str
    mask_zero_adv_groups: bool
    require_state: bool
    admissions_log: str | None = None

    @property
    def uses_estimator(self) -> bool:
        return self.enable and self.filter_enable


def _get(config: Any, path: str, default: Any = None) -> Any:
    value = OmegaConf.select(config, path, default=default) if isinstance(config, DictConfig) else default
    return value


def _err(key: str, message: str) -> DEPOConfigError:
    return DEPOConfigError(f"{key}: {message}")


def _as_bool(config, key: str, default: bool) -> bool:
    value = _get(config, key, default)
    if not isinstance(value, bool):
        raise _err(key, f"must be true or false, got {value!r}")
    return value


def looks_like_hub_id(name: str) -> bool:
    return bool(_HUB_ID.match(name)) and not name.startswith((".", "~")) and ".." not in name


def check_backbone(backbone: Any) -> None:
    key = "depo.estimator.backbone"
    if not isinstance(backbone, str) or not backbone.strip():
        raise _err(key, f"must be a local directory or a hub id, got {backbone!r}")
    expanded = os.path.expanduser(backbone)
    if os.path.isdir(expanded):
        return
    if os.path.exists(expanded):
        raise _err(key, f"{backbone!r} is a file; it must be a directory holding an HF encoder and its tokenizer")
    if os.path.isabs(expanded) or backbone.startswith((".", "~")) or backbone.count("/") > 1:
        raise _err(key, f"{backbone!r} does not exist (and is not a hub id like 'distilbert-base-uncased')")
    if not looks_like_hub_id(backbone):
        raise _err(key, f"{backbone!r} is neither an existing directory nor a valid hub id")


def _check_module_path(key: str, path: str) -> None:
    """verl loads reward functions from ``pkg://dotted.module`` or a (``file://``) file path."""
    if path.startswith("pkg://"):
        import importlib.util

        module = path[len("pkg://") :].replace("/", ".")
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise _err(key, f"module {module!r} is not importable")
        return
    if path.startswith("file://"):
        path = path[len("file://") :]
    if not os.path.isfile(os.path.expanduser(path)):
        raise _err(key, f"{path!r} does not exist")


def _check_reward(config) -> None:
    acc_key = _get(config, "depo.labels.acc_key", "acc")
    for rm_key in ("reward.reward_model.enable", "reward_model.enable"):
        if _get(config, rm_key, False):
            raise _err(
                rm_key,
                f"DEPO labels need per-response correctness (depo.labels.acc_key={acc_key!r}), which a reward "
                "model does not produce; use a rule-based reward function (reward.custom_reward_function.path)",
            )
    # verl migrates the legacy top-level custom_reward_function into reward.* at run time.
    for path_key in ("reward.custom_reward_function.path", "custom_reward_function.path"):
        path = _get(config, path_key, None)
        if path:
            _check_module_path(path_key, str(path))
            return
    # verl's built-in scorer: only the math_dapo family returns `acc`. Check the data sources of
    # local training files (one column read); remote files are checked at the first step instead.
    if acc_key != "acc":
        raise _err(
            "reward.custom_reward_function.path",
            f"unset, so verl's built-in scorer is used, which never returns depo.labels.acc_key={acc_key!r}",
        )
    files = _get(config, "data.train_files", None)
    files = [files] if isinstance(files, str) else list(files or [])
    sources: set[str] = set()
    for f in files:
        f = os.path.expanduser(str(f))
        if not (f.endswith(".parquet") and os.path.isfile(f)):
            return
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(f, columns=["data_source"])
        except Exception:  # no data_source column: verl fails on its own with a clearer error
            return
        sources.update(str(s) for s in table.column("data_source").to_pylist())
    bad = sorted(s for s in sources if s not in VERL_ACC_SOURCES and not s.startswith("aime"))
    if bad:
        raise _err(
            "reward.custom_reward_function.path",
            f"unset, and verl's built-in scorer returns no {acc_key!r} for data_source {bad[:5]}; set it to "
            "recipe/depo/reward.py (name compute_score), whose result carries 'acc' for every source",
        )


def validate(config: DictConfig) -> DEPOSettings:
    enable = _as_bool(config, "depo.enable", False) if _get(config, "depo", None) is not None else False
    filter_enable = _as_bool(config, "depo.filter.enable", True)
    mask = _as_bool(config, "depo.advantage_filter.mask_zero_adv_groups", False)
    require_state = _as_bool(config, "depo.checkpoint.require_state", True)

    # -- window / warm-up / exploration / scan cap
    window = _get(config, "depo.filter.window", [0.15, 0.85])
    window = list(window) if window is not None and not isinstance(window, str) else window
    if not isinstance(window, list) or len(window) != 2:
        raise _err("depo.filter.window", f"must be [low, high], got {window!r}")
    low, high = window
    for bound in (low, high):
        if isinstance(bound, bool) or not isinstance(bound, (int, float)):
            raise _err("depo.filter.window", f"bounds must be numbers, got {window!r}")
    if not (0.0 <= low <= 1.0 and 0.0 <= high <= 1.0):
        raise _err("depo.filter.window", f"{window!r} is outside [0, 1] (predictions are accuracies)")
    if not low < high:
        raise _err("depo.filter.window", f"{window!r} is empty: low must be below high")

    train_batch_size = _get(config, "data.train_batch_size", None)
    if isinstance(train_batch_size, bool) or not isinstance(train_batch_size, int) or train_batch_size <= 0:
        raise _err("data.train_batch_size", f"must be a positive int, got {train_batch_size!r}")
    gen_batch_size = _get(config, "data.gen_batch_size", None)
    if gen_batch_size is not None and (
        isinstance(gen_batch_size, bool) or not isinstance(gen_batch_size, int) or gen_batch_size <= 0
    ):
        raise _err("data.gen_batch_size", f"must be a positive int or null, got {gen_batch_size!r}")
    chunk = gen_batch_size or train_batch_size

    max_scan = _get(config, "depo.filter.max_scan", None)
    if max_scan is None:
        max_scan = DEFAULT_SCAN_FACTOR * train_batch_size
    if isinstance(max_scan, bool) or not isinstance(max_scan, int):
        raise _err("depo.filter.max_scan", f"must be an int or null, got {max_scan!r}")
    if max_scan < train_batch_size:
        raise _err(
            "depo.filter.max_scan",
            f"{max_scan} is below data.train_batch_size={train_batch_size}: a step could never be filled "
            "from scanned prompts",
        )
    if enable and filter_enable and chunk > max_scan:
        raise _err(
            "data.gen_batch_size",
            f"{chunk} prompts per dataloader fetch exceed depo.filter.max_scan={max_scan}; the refill draws "
            "whole fetches, so lower data.gen_batch_size or raise the cap",
        )
    warmup = _get(config, "depo.filter.warmup_steps", 100)
    explore = _get(config, "depo.filter.explore_rate", 0.0)
    seed = _get(config, "depo.filter.seed", 0)
    try:
        filter_cfg = FilterConfig(
            low=float(low), high=float(high), warmup_steps=warmup, explore_rate=explore, max_scan=max_scan, seed=seed
        )
    except ValueError as exc:
        name = {"warmup_steps": "warmup_steps", "explore_rate": "explore_rate"}
        key = next((f"depo.filter.{k}" for k in name if k in str(exc)), "depo.filter")
        raise _err(key, str(exc)) from None

    # -- estimator
    est = _get(config, "depo.estimator", None)
    est = OmegaConf.to_container(est, resolve=True) if isinstance(est, DictConfig) else dict(est or {})
    placement = est.pop("placement", "colocated")
    estimator_cfg = {k: v for k, v in est.items() if k not in WORKER_KEYS}

    admissions_log = _get(config, "depo.admissions_log", None)
    if admissions_log is not None and (not isinstance(admissions_log, str) or not admissions_log):
        raise _err("depo.admissions_log", f"must be a file path or null, got {admissions_log!r}")

    labels_acc = _get(config, "depo.labels.acc_key", "acc")
    logprob_source = _get(config, "depo.labels.logprob_source", "old_log_probs")
    text_source = _get(config, "depo.labels.text_source", "auto")

    settings = DEPOSettings(
        enable=enable,
        filter_enable=filter_enable,
        filter=filter_cfg,
        estimator=estimator_cfg,
        placement=placement,
        acc_key=labels_acc,
        logprob_source=logprob_source,
        text_source=text_source,
        mask_zero_adv_groups=mask,
        require_state=require_state,
        admissions_log=admissions_log,
    )
    if not enable:
        return settings

    # -- from here on, only what DEPO itself needs
    if not _get(config, "trainer.use_v1", False):
        raise _err("trainer.use_v1", "DEPO runs on verl's V1 trainer; set trainer.use_v1=true")
    mode = _get(config, "trainer.v1.trainer_mode", "sync")
    if mode != "sync":
        raise _err("trainer.v1.trainer_mode", f"DEPOTrainer is built on the sync trainer, got {mode!r}")
    n = _get(config, "actor_rollout_ref.rollout.n", 1)
    if not isinstance(n, int) or n < 2:
        raise _err("actor_rollout_ref.rollout.n", f"mean@k labels and GRPO groups need n >= 2, got {n!r}")
    if mask:
        estimator_name = str(_get(config, "algorithm.adv_estimator", "grpo"))
        if estimator_name not in GROUP_ESTIMATORS:
            raise _err(
                "algorithm.adv_estimator",
                f"{estimator_name!r} is not a group-baseline estimator, so depo.advantage_filter."
                f"mask_zero_adv_groups has no zero-advantage groups to mask; use one of {sorted(GROUP_ESTIMATORS)}",
            )
    if not filter_enable:
        return settings

    if placement not in PLACEMENTS:
        raise _err("depo.estimator.placement", f"must be one of {PLACEMENTS}, got {placement!r}")
    check_backbone(estimator_cfg.get("backbone"))
    from recipe.depo.estimator import EstimatorConfig

    try:
        EstimatorConfig.from_dict(estimator_cfg)
    except ValueError as exc:
        fields = [f.name for f in dataclasses.fields(EstimatorConfig)]
        field_name = next((f for f in sorted(fields, key=len, reverse=True) if str(exc).startswith(f)), None)
        raise _err(f"depo.estimator.{field_name}" if field_name else "depo.estimator", str(exc)) from None

    if not isinstance(labels_acc, str) or not labels_acc:
        raise _err("depo.labels.acc_key", f"must be a non-empty string, got {labels_acc!r}")
    if logprob_source not in LOGPROB_SOURCES:
        raise _err("depo.labels.logprob_source", f"must be one of {LOGPROB_SOURCES}, got {logprob_source!r}")
    if logprob_source == "rollout_log_probs" and not _get(
        config, "actor_rollout_ref.rollout.calculate_log_probs", False
    ):
        raise _err(
            "depo.labels.logprob_source",
            "rollout_log_probs needs actor_rollout_ref.rollout.calculate_log_probs=true (otherwise the distill "
            "target would be built from missing log-probs)",
        )
    if not isinstance(text_source, str) or not (
        text_source in ("auto", "user") or text_source.startswith("extra_info.")
    ):
        raise _err("depo.labels.text_source", f"must be 'auto', 'user' or 'extra_info.<key>', got {text_source!r}")
    _check_reward(config)
    return settings


def check_resume_settings(state_dir: str, estimator: dict, filter_config: FilterConfig) -> list[str]:
    """Compare the estimator and filter settings saved in a DEPO state directory with the run's.

    An estimator change that cannot apply to trained weights (backbone, pooling, head shape,
    freezing the encoder) is a ``DEPOConfigError`` naming ``depo.estimator.<key>``, raised before
    any worker starts. Every other change is returned, one line per key, for the caller to log:
    the estimator worker applies its changes as it loads the checkpoint, and the filter is built
    from the run's settings (only its queue, counters and RNG come from the checkpoint).
    """
    from recipe.depo.estimator import EstimatorConfig, resume_changes

    with open(os.path.join(state_dir, "estimator", "config.json")) as f:
        saved_estimator = json.load(f)
    applied, refused = resume_changes(saved_estimator, EstimatorConfig.from_dict(estimator).to_dict())
    if refused:
        raise DEPOConfigError(f"depo.estimator.{refused[0]} (resuming from {state_dir})")
    changes = [f"depo.estimator.{line}" for line in applied]
    with open(os.path.join(state_dir, "state.json")) as f:
        saved = json.load(f)["filter"]["config"]
    now = filter_config
    pairs = [
        ("window", [saved["low"], saved["high"]], [now.low, now.high]),
        ("warmup_steps", saved["warmup_steps"], now.warmup_steps),
        ("explore_rate", saved["explore_rate"], now.explore_rate),
        ("max_scan", saved["max_scan"], now.max_scan),
        ("seed", saved["seed"], now.seed),
    ]
    for key, before, after in pairs:
        if before != after:
            effect = "no effect: the exploration RNG resumes from the checkpoint" if key == "seed" else "applied"
            changes.append(f"depo.filter.{key}: {before!r} in the checkpoint, {after!r} now ({effect})")
    return changes
