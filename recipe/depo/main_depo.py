"""Entry point: ``python -m recipe.depo.main_depo [hydra overrides]``.

Composes ``config/depo_trainer.yaml`` (verl's ppo_trainer + the ``depo:`` block), refuses a bad
config or unscorable data (``recipe.depo.preflight``) before Ray starts and before hydra writes
anything into the run directory (``recipe.depo.start_gate``), and runs verl's own V1 task runner
with the DEPO trainer of the configured mode (``recipe.depo.trainer.TRAINERS``) in place of verl's.
``--cfg job`` prints the composed config and exits (hydra handles it; no Ray).
"""

from __future__ import annotations

import contextlib
import logging
import os

import hydra
import ray
from omegaconf import DictConfig

from recipe.depo.start_gate import check_start_once

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def mode_trainer_is(mode: str, trainer_cls):
    """Make verl's trainer lookup for ``mode`` return ``trainer_cls`` for the duration.

    verl's ``TaskRunnerV1.run`` picks ``get_trainer_cls(config.trainer.v1.trainer_mode)``. Keeping
    verl's mode name (rather than registering a new one) keeps every ``trainer_mode`` branch of
    verl (replay buffer, TransferQueue checkpointing, warm-up batches) on that mode's path; this
    swap happens only inside the task runner's own process.
    """
    from verl.trainer.ppo.v1 import trainer_base

    registry = trainer_base.TRAINER_REGISTRY
    previous = registry.get(mode)
    registry[mode] = trainer_cls
    try:
        yield
    finally:
        if previous is None:
            registry.pop(mode, None)
        else:
            registry[mode] = previous


def sync_trainer_is(trainer_cls):
    return mode_trainer_is("sync", trainer_cls)


from verl.trainer.main_ppo import TaskRunnerV1  # noqa: E402


class DEPOTaskRunner(TaskRunnerV1.__ray_actor_class__):
    """verl's V1 task runner (TransferQueue, agent loop manager, tracking) running the DEPO trainer
    of the configured ``trainer.v1.trainer_mode``."""

    def run(self, config: DictConfig):
        from recipe.depo.trainer import TRAINERS

        mode = config.trainer.v1.trainer_mode
        if mode not in TRAINERS:  # the start-up check refused it when DEPO is on; verl names it otherwise
            return super().run(config)
        with mode_trainer_is(mode, TRAINERS[mode]):
            return super().run(config)


def run_depo(config: DictConfig) -> None:
    from verl.trainer.main_ppo import run_ppo
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device

    auto_set_device(config)
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    run_ppo(config, task_runner_class=ray.remote(DEPOTaskRunner))


@hydra.main(config_path="config", config_name="depo_trainer", version_base=None)
def main(config: DictConfig) -> None:
    # Normally done already by the start gate (hydra.callbacks), before the run dir was written.
    check_start_once(config)
    run_depo(config)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
