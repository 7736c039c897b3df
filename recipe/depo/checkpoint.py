"""DEPO's state inside verl's checkpoint folders: ``global_step_N/depo/``.

Layout: ``estimator/`` (the estimator's own atomic checkpoint), ``state.json`` (format version,
step, filter state) and ``carry_rows.pt`` (the carried dataset rows, in carry-over order). The
folder is written to a temporary directory and renamed into place, and the trainer does so
*before* verl writes its ``latest_checkpointed_iteration.txt``, so the step verl resumes from
always has complete DEPO state. Which folder that is comes from verl's own lookup
(``find_latest_ckpt_path`` or ``trainer.resume_from_path``); tests/trainer/test_depo_verl_contract.py
checks it is the folder verl loads the actor from.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from typing import TYPE_CHECKING

import torch
from omegaconf import DictConfig
from verl.utils.checkpoint.checkpoint_manager import find_latest_ckpt_path

from recipe.depo.config_fields import DEPOConfigError
from recipe.depo.estimator.config import EstimatorConfig, resume_changes
from recipe.depo.filter import FilterConfig
from recipe.depo.fsutil import publish_dir, read_json

if TYPE_CHECKING:
    from recipe.depo.intake import PromptIntake
    from recipe.depo.workers.estimator_client import EstimatorClient

logger = logging.getLogger(__name__)

STATE_DIR = "depo"
# 2: carried rows are single-row TensorDicts (verl's dataloader format), not per-row dicts.
STATE_FORMAT_VERSION = 2
# written since the asynchronous modes; a checkpoint without it resumes with nothing in flight
IN_FLIGHT_FILE = "in_flight.json"


def step_folder(config: DictConfig, step: int) -> str:
    """The ``global_step_N`` folder verl's ``_save_checkpoint`` writes step ``step`` to."""
    return os.path.join(config.trainer.default_local_dir, f"global_step_{step}")


def resumed_folder(config: DictConfig) -> str | None:
    """The ``global_step_N`` folder verl's ``_load_checkpoint`` resumes from, by verl's own rules."""
    trainer = config.trainer
    if trainer.resume_mode == "resume_path":
        return os.path.abspath(trainer.resume_from_path)
    if trainer.resume_mode == "auto":
        return find_latest_ckpt_path(os.path.abspath(trainer.default_local_dir))
    return None


def save(
    config: DictConfig,
    step: int,
    intake: PromptIntake,
    estimator: EstimatorClient | None,
    in_flight: dict | None = None,
) -> str:
    """Write ``global_step_<step>/depo/`` completely, or leave nothing behind. ``estimator`` is
    None for a selector that reads no estimator (greso, posterior): no ``estimator/`` then.
    ``in_flight`` is the state of the predictions of prompts sent to rollout but not yet trained
    (``in_flight.json``)."""
    folder = step_folder(config, step)
    os.makedirs(folder, exist_ok=True)
    final = os.path.join(folder, STATE_DIR)
    tmp = os.path.join(folder, f".{STATE_DIR}.tmp-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    try:
        written = estimator.save(os.path.abspath(os.path.join(tmp, "estimator"))) if estimator else tmp
        if not os.path.isdir(written):
            # the worker wrote it on its own node; without a shared filesystem it is not here
            raise RuntimeError(
                f"the estimator worker saved its state to {written}, which this process (the trainer, "
                f"on another node) cannot see: {config.trainer.default_local_dir} must be on a filesystem "
                "shared by all nodes (python -m recipe.depo.cluster_check finds this before a run)"
            )
        torch.save(intake.carried_rows(), os.path.join(tmp, "carry_rows.pt"))
        state = {"format_version": STATE_FORMAT_VERSION, "global_steps": step, **intake.state_dict()}
        with open(os.path.join(tmp, "state.json"), "w") as f:
            json.dump(state, f)
        if in_flight is not None:
            with open(os.path.join(tmp, IN_FLIGHT_FILE), "w") as f:
                json.dump(in_flight, f)
        publish_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def prune(config: DictConfig, saved_step: int) -> list[str]:
    """Remove ``depo/`` from the step folders whose actor state verl has deleted.

    verl keeps ``trainer.max_actor_ckpt_to_keep`` actor checkpoints and deletes only their
    ``actor/`` folders; DEPO's state (the estimator's weights and Adam state, ~0.8 GB for
    DistilBERT) follows the same retention. A step folder that still has its actor keeps its
    ``depo/`` (verl leaves the checkpoints of an earlier run alone after a resume, and so does this).
    Nothing is removed without a retention limit (verl then deletes nothing either), and never the
    step just saved: its ``depo/`` is what a resume from it needs, whatever happened to its actor.
    """
    root = config.trainer.default_local_dir
    removed = []
    if not config.trainer.get("max_actor_ckpt_to_keep") or not os.path.isdir(root):
        return removed
    for name in os.listdir(root):
        if name == f"global_step_{saved_step}":
            continue
        folder = os.path.join(root, name)
        state = os.path.join(folder, STATE_DIR)
        if (
            name.startswith("global_step_")
            and os.path.isdir(state)
            and not os.path.isdir(os.path.join(folder, "actor"))
        ):
            shutil.rmtree(state, ignore_errors=True)
            removed.append(state)
    return sorted(removed)


def locate(config: DictConfig, require_state: bool) -> str | None:
    """The DEPO state directory of the checkpoint verl resumed from, or None to start fresh."""
    folder = resumed_folder(config)
    if folder is None:
        return None
    state_dir = os.path.join(folder, STATE_DIR)
    if os.path.isfile(os.path.join(state_dir, "state.json")):
        return state_dir
    if require_state:
        raise RuntimeError(
            f"resuming from {folder}, which holds no DEPO state ({STATE_DIR}/): the estimator and the "
            "filter would silently restart from scratch. Set depo.checkpoint.require_state=false to "
            "accept that (e.g. to start DEPO from a plain GRPO checkpoint)."
        )
    logger.warning(f"{folder} has no DEPO state; estimator and filter start fresh")
    return None


def check_settings(state_dir: str, estimator: EstimatorConfig, filter_config: FilterConfig) -> list[str]:
    """Compare the estimator and filter settings saved in ``state_dir`` with the run's.

    An estimator change that cannot apply to trained weights (backbone, pooling, head shape,
    freezing the encoder) is a ``DEPOConfigError`` naming ``depo.estimator.<key>``, raised before
    any worker starts. Every other change is returned, one line per key, for the caller to log:
    the estimator worker applies its changes as it loads the checkpoint, and the filter is built
    from the run's settings (only its queue, counters and RNG come from the checkpoint).
    """
    saved_config = os.path.join(estimator_dir(state_dir), "config.json")
    if os.path.isfile(saved_config) and filter_config.needs_estimator:
        applied, refused = resume_changes(read_json(saved_config, "estimator config"), estimator.to_dict())
    else:  # the saved run or this one reads no estimator: nothing of it to compare
        applied, refused = [], []
    if refused:
        problems = []
        for line in refused:
            key, _, message = line.partition(": ")
            problems.append((f"depo.estimator.{key}", f"{message} (resuming from {state_dir})"))
        raise DEPOConfigError(problems)
    changes = [f"depo.estimator.{line}" for line in applied]
    saved = read_json(os.path.join(state_dir, "state.json"), "DEPO state")["filter"]["config"]
    if "window" not in saved and "low" in saved:  # checkpoints written before the window was saved by name
        saved = {**saved, "window": [saved["low"], saved["high"]]}
    for key, after in filter_config.to_dict().items():
        before = saved.get(key, after)  # a field the checkpoint predates: nothing to compare
        if key == "selector":
            changes += _selector_changes(before, after)
        elif before != after:
            effect = "no effect: the exploration RNG resumes from the checkpoint" if key == "seed" else "applied"
            changes.append(f"depo.filter.{key}: {before!r} in the checkpoint, {after!r} now ({effect})")
    return changes


def _selector_changes(before: dict, after: dict) -> list[str]:
    """Changed selector settings, one line per key: another selector starts fresh (a state of one
    is meaningless to another); a changed setting of the same one applies to its restored state."""
    if before.get("name") != after.get("name"):
        return [
            f"depo.filter.selector.name: {before.get('name')!r} in the checkpoint, {after.get('name')!r} now "
            "(its state is not restored: the new selector starts fresh)"
        ]
    block = after.get("name")
    old, new = before.get(block) or {}, after.get(block) or {}
    return [
        f"depo.filter.selector.{block}.{key}: {old[key]!r} in the checkpoint, {value!r} now (applied)"
        for key, value in new.items()
        if key in old and old[key] != value
    ]


def estimator_dir(state_dir: str) -> str:
    return os.path.join(state_dir, "estimator")


def restore(state_dir: str, intake: PromptIntake) -> None:
    """Put the filter's state and the carried rows saved in ``state_dir`` back into ``intake``."""
    state = read_json(os.path.join(state_dir, "state.json"), "DEPO filter state")
    if state.get("format_version") != STATE_FORMAT_VERSION:
        raise RuntimeError(
            f"{state_dir}: DEPO state format {state.get('format_version')!r} is not supported "
            f"(this depo-verl writes and reads format {STATE_FORMAT_VERSION})"
        )
    rows = torch.load(os.path.join(state_dir, "carry_rows.pt"), weights_only=False)
    intake.load_state_dict(state, rows)


def load_in_flight(state_dir: str) -> dict:
    """The in-flight predictions saved in ``state_dir`` (none in a checkpoint written before them)."""
    path = os.path.join(state_dir, IN_FLIGHT_FILE)
    if not os.path.exists(path):
        return {"learned_version": -1, "records": {}}
    return read_json(path, "DEPO in-flight predictions")
