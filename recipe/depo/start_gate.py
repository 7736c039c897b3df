"""Refuse a bad start before hydra touches the run directory.

Hydra's ``run_job`` creates ``hydra.run.dir``, opens its log file there and writes
``config.yaml``, ``hydra.yaml`` and ``overrides.yaml`` (into ``hydra.output_subdir``; the launchers
pass ``hydra.output_subdir=.``) before it calls the task function. A start refused inside
``main`` therefore replaced a finished run's saved settings with the refused ones, and the report,
which reads ``config.yaml``, then described the finished run with them (rollout n 4 -> 16
multiplied its rollouts by four).

``StartGate`` is a hydra callback (``hydra.callbacks`` in ``depo_trainer.yaml``): its
``on_run_start`` runs after the config is composed and before ``run_job``, so the same checks
``main`` runs (DEPO's, the data preflight, verl's own ``validate_config``) refuse a bad start
there and nothing is written. ``main`` runs them itself when the gate did not (multirun, a config
without the callback, a gate that failed unexpectedly: hydra turns a callback's exception into a
warning, only SystemExit gets through).
"""

from __future__ import annotations

import copy
import warnings

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

# The task config (unresolved YAML) that passed the gate in this process; main() compares.
_passed: str | None = None


def check_start(config: DictConfig) -> None:
    """Raise SystemExit with one line per problem unless ``config`` (the task config, without the
    ``hydra`` node) may start: DEPO's settings, the training data, then verl's own checks."""
    from recipe.depo.preflight import PreflightError, check_training_start
    from recipe.depo.validation import DEPOConfigError

    try:
        check_training_start(config)  # the config, then the data: the one start-up check
    except DEPOConfigError as exc:
        # A config mistake is the user's to fix: one line per problem naming its key, no traceback.
        lines = [f"depo: invalid config: {key}: {message}" for key, message in exc.problems]
        raise SystemExit("\n".join(lines)) from None
    except PreflightError as exc:
        raise SystemExit(f"depo: cannot train on this data: {exc}") from None
    _check_verl(config)


def _check_verl(config: DictConfig) -> None:
    """verl's validate_config, on a copy (auto_set_device rewrites trainer.device), as run_depo
    calls it; its refusals (ValueError, AssertionError) become one line."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device

    checked = copy.deepcopy(config)
    auto_set_device(checked)
    try:
        with warnings.catch_warnings():  # run_depo repeats these calls, and gives their warnings once
            warnings.simplefilter("ignore")
            validate_config(
                config=checked, use_reference_policy=need_reference_policy(checked), use_critic=need_critic(checked)
            )
    except (ValueError, AssertionError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise SystemExit(f"verl: invalid config: {message}") from None


def task_config(config: DictConfig) -> DictConfig:
    """What hydra hands the task function: the composed config without its ``hydra`` node."""
    task = copy.deepcopy(config)
    with open_dict(task):
        task.pop("hydra", None)
    return task


def _key(config: DictConfig) -> str:
    return OmegaConf.to_yaml(config)


def check_start_once(config: DictConfig) -> None:
    """``check_start`` unless the gate already passed this very config in this process."""
    if _passed is not None and _passed == _key(config):
        return
    check_start(config)


def check_writable(run_dir: str, task: DictConfig) -> None:
    """The run directory and the checkpoint folder can be written: otherwise hydra fails with a
    traceback as it creates the run directory, or verl at its first checkpoint, hours in."""
    from recipe.depo.fsutil import unwritable_dir_reason

    checkpoints = OmegaConf.select(task, "trainer.default_local_dir", default=None)
    for key, folder in (("hydra.run.dir", run_dir), ("trainer.default_local_dir", checkpoints)):
        if not isinstance(folder, str) or "://" in folder:  # remote storage is verl's to reach
            continue
        reason = unwritable_dir_reason(folder)
        if reason:
            raise SystemExit(f"depo: {key} {folder}: {reason}")


class StartGate(Callback):
    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        global _passed
        from hydra.core.hydra_config import HydraConfig

        # ${hydra:...} interpolations resolve against the config being started, as in run_job.
        HydraConfig.instance().set_config(config)
        task = task_config(config)
        check_start(task)
        check_writable(str(config.hydra.run.dir), task)
        _passed = _key(task)
