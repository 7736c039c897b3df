"""DEPOTrainer: verl 0.9.1's V1 sync trainer with DEPO's estimator in front of the rollout.

Hook glue only. The work is done by :class:`~recipe.depo.intake.PromptIntake` (draw, score,
select, carry over), :class:`~recipe.depo.workers.estimator_client.EstimatorClient` (the
estimator's Ray worker), :class:`~recipe.depo.advantage.ZeroAdvantageGroups` (flagging and
masking), :func:`~recipe.depo.labels.read_labels` and :mod:`recipe.depo.checkpoint`. The trainer
keeps verl's sync semantics (``trainer.v1.trainer_mode`` stays ``sync``, so every
``trainer_mode != "sync"`` branch in verl behaves as for plain GRPO) and overrides:

=========================  =====================================================================
``_next_train_batch``      the intake, for ``prepare_step`` and the replay buffer's refills alike
                           (shadow mode: verl's own batch, which the intake only scores)
``_compute_advantage``     before verl's: read the step's labels by uid from TransferQueue and send
                           the estimator its update, which runs while the actor updates
                           (``depo.estimator.overlap_update``); after verl's: flag zero-advantage
                           groups, optionally mask them
``step``                   after verl's (actor updated): restore masks, wait for the estimator's
                           update (or read the labels and update it now, when not overlapped),
                           update the selector, log ``depo/*`` (with dynamic sampling, also from
                           the groups verl dropped untrained)
``_build_replay_buffer``   with ``algorithm.filter_groups.enable``: verl's buffer, made to label
                           the groups it drops untrained (``recipe.depo.dynamic_sampling``)
``_save_checkpoint``       DEPO state into ``global_step_N/depo/`` *before* verl writes
                           ``latest_checkpointed_iteration.txt``
``_load_checkpoint``       find that state for the step verl resumes from
``on_init_end``            start the estimator worker (from its checkpoint when resuming; not for
                           the history-only selectors), then verl's weight sync
=========================  =====================================================================

Everything else of verl this relies on is listed, with the reason and the upstream hook that would
remove it, in docs/verl_surface.md.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig
from transfer_queue import KVBatchMeta
from verl.trainer.ppo.utils import Role
from verl.trainer.ppo.v1.trainer_colocate_async import PPOTrainerColocateAsync
from verl.trainer.ppo.v1.trainer_separate_async import PPOTrainerSeparateAsync
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.utils import tensordict_utils as tu
from verl.utils.debug import marked_timer

from recipe.depo import checkpoint
from recipe.depo.advantage import ZeroAdvantageGroups
from recipe.depo.dynamic_sampling import EVICTED, SURPLUS, UntrainedGroups
from recipe.depo.intake import PromptIntake
from recipe.depo.labels import concat_labels, read_labels
from recipe.depo.staleness import InFlightPredictions, generation_versions
from recipe.depo.validation import run_settings
from recipe.depo.workers.estimator_client import EstimatorClient, PendingLearning

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))


@dataclass
class _StepLearning:
    """One step's labels on their way into the estimator and the selector."""

    versions: dict
    trained: dict = field(default_factory=dict)
    learnt: Any = None
    records: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    estimator: PendingLearning | None = None


class DEPOTrainerMixin:
    """DEPO's hooks, applied over each of verl's registered V1 trainers (bottom of this file)."""

    def __init__(self, config: DictConfig):
        # The entry point checked the config before Ray started (preflight.check_training_start).
        self.depo = run_settings(config)
        self.intake: PromptIntake | None = None
        if self.depo.uses_filter:
            self.intake = PromptIntake(
                self.depo.filter,
                text_source=self.depo.labels.text_source,
                rollouts_per_prompt=config.actor_rollout_ref.rollout.n,
                admissions_log=self.depo.admissions_log,
            )
        self.estimator: EstimatorClient | None = None
        self.zero_adv = ZeroAdvantageGroups(
            mask=self.depo.enable and self.depo.advantage_filter.mask_zero_adv_groups,
            score_field="token_level_rewards" if config.algorithm.use_kl_in_reward else "rm_scores",
        )
        self.depo_resume_dir: str | None = None
        # the step's labels and the estimator's update in flight (_start_learning .. _finish_learning)
        self._learning: _StepLearning | None = None
        self._overlap_now = False  # this step's update is still to be sent from _compute_advantage
        # every prompt the intake sent to rollout, until its group is trained (async modes train
        # it steps later, and a checkpoint can fall in between)
        self.in_flight = InFlightPredictions()
        # verl's dynamic sampling drops groups untrained; DEPO labels them too (_build_replay_buffer)
        filter_groups = config.algorithm.get("filter_groups", None)
        self.untrained: UntrainedGroups | None = None
        if self.intake is not None and filter_groups is not None and filter_groups.get("enable", False):
            self.untrained = UntrainedGroups(self.depo.labels)
        super().__init__(config)

    def _build_replay_buffer(self):
        buffer = super()._build_replay_buffer()
        if self.untrained is not None and not self.untrained.attach(buffer):
            self.untrained = None
        return buffer

    def on_init_end(self):
        if self.intake is not None:
            if self.depo.uses_estimator:  # greso and posterior read no estimator: no worker
                self.start_estimator()
            if self.depo_resume_dir:
                checkpoint.restore(self.depo_resume_dir, self.intake)
                self.in_flight.load_state_dict(checkpoint.load_in_flight(self.depo_resume_dir))
        super().on_init_end()

    def start_estimator(self) -> None:
        resume = checkpoint.estimator_dir(self.depo_resume_dir) if self.depo_resume_dir else None
        if resume and not os.path.isdir(resume):
            logger.warning(
                f"{self.depo_resume_dir} holds no estimator (a selector without one saved it): it starts fresh"
            )
            resume = None
        actor_pool = None
        if self.depo.estimator.placement == "colocated":
            roles = (Role.Actor, Role.ActorRolloutRef, Role.ActorRollout)
            role = next(r for r in roles if r in self.role_worker_mapping)
            actor_pool = self.resource_pool_manager.get_resource_pool(role)
        self.estimator = EstimatorClient.start(
            self.depo.estimator, actor_pool=actor_pool, device_name=self.config.trainer.device, checkpoint=resume
        )

    def _next_train_batch(self, num_prompts: int | None = None):
        if self.intake is None:
            return super()._next_train_batch(num_prompts)
        score = self.estimator.predict if self.estimator is not None else None
        if self.intake.shadow_mode:
            # verl's own batch, untouched (the run trains as GRPO would); the selector only shadows it
            batch = super()._next_train_batch(num_prompts)
            self.intake.shadow(batch, self.global_steps, score)
            self.in_flight.add({u: self.intake.submitted[u] for u in map(str, tu.get(batch, "uid"))}, self.global_steps)
            return batch
        needed = self.config.data.train_batch_size if num_prompts is None else int(num_prompts)
        batch = self.intake.next_batch(needed, self.global_steps, self._fetch_one_gen_batch, score)
        self.in_flight.add({u: self.intake.submitted[u] for u in map(str, tu.get(batch, "uid"))}, self.global_steps)
        tu.assign_non_tensor_data(batch, "global_steps", self.global_steps)
        return batch

    def _compute_advantage(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        if self._overlap_now:
            # The labels are complete once the actor's log-probs are in (verl computes them just
            # before this): the estimator learns on its own worker while the actor updates.
            self._overlap_now = False
            self._learning = self._start_learning(batch)
        batch = super()._compute_advantage(batch, metrics)
        self.zero_adv.flag(batch, metrics)
        return batch

    def _overlaps_learning(self) -> bool:
        # Sync mode only: with parameter_sync_step > 1 verl runs several advantage/update rounds
        # per step and the estimator learns from the whole step once; in the async modes the
        # intake scores prefetched batches meanwhile, and their lag metrics assume the update
        # lands at the step's end. Those wait for the step's end, as before.
        return (
            self.estimator is not None
            and self.depo.estimator.overlap_update
            and getattr(self, "trainer_mode", "sync") == "sync"
            and getattr(self, "parameter_sync_step", 1) == 1
        )

    def step(self, metrics: dict, timing_raw: dict) -> KVBatchMeta:
        if self.intake is not None:
            self.intake.begin_step()
        self._learning = None
        self._overlap_now = self.intake is not None and self._overlaps_learning()
        try:
            batch = super().step(metrics, timing_raw)
        finally:
            self._overlap_now = False
        # The masks were for the actor's loss only; metrics and labels read the real ones.
        self.zero_adv.restore()
        if self.intake is not None:
            learning = self._learning or self._start_learning(batch)
            self._learning = None
            self._finish_learning(learning, metrics, timing_raw)
        return batch

    def _start_learning(self, batch: KVBatchMeta) -> _StepLearning:
        """Read the step's labels by uid from TransferQueue, take their records and send the
        estimator its update (not waited for here)."""
        labels = read_labels(batch, self.depo.labels)
        learning = _StepLearning(versions=generation_versions(batch.tags, batch.keys))
        # the records of the prompts trained now, whichever step submitted them (async modes)
        learning.trained = self.in_flight.take(labels.uids)
        learning.learnt, learning.records = labels, learning.trained
        if self.untrained is not None:
            # the groups verl's dynamic sampling dropped untrained this step: labelled once, with
            # the records of their admission, beside the trained ones
            dropped, counts = self.untrained.take()
            learning.learnt = concat_labels(labels, dropped)
            learning.records = {**learning.trained, **self.in_flight.take(dropped.uids)}
            learning.metrics["depo/dynsamp/evicted_labelled"] = counts[EVICTED]
            learning.metrics["depo/dynsamp/surplus_labelled"] = counts[SURPLUS]
            learning.metrics["depo/dynsamp/labelled"] = len(learning.learnt)
        if self.estimator is not None:
            learning.estimator = self.estimator.start_learning(learning.learnt, learning.records)
        return learning

    def _finish_learning(self, learning: _StepLearning, metrics: dict, timing_raw: dict) -> None:
        metrics.update(learning.metrics)
        if learning.estimator is not None:
            # what the estimator's update adds to the step: all of it in series, the part the
            # actor's update did not cover when overlapped (its own time: depo/estimator/update_time_s)
            with marked_timer("depo_estimator_update", timing_raw, color="purple"):
                metrics.update(learning.estimator.result())
        learnt, records, trained = learning.learnt, learning.records, learning.trained
        metrics.update(self.intake.learn(learnt.uids, learnt.mean_k, records))
        self.in_flight.learned([v[1] for v in learning.versions.values()])
        if len(learning.versions) == len(trained):
            lags = self.in_flight.lags(trained, learning.versions, self.global_steps)
            metrics.update(self.in_flight.metrics(lags))
        self._forget_evicted()
        metrics.update(self.intake.step_metrics(self.global_steps, dataset_size=len(self.train_dataset)))

    def _save_checkpoint(self):
        # DEPO state first: verl writes latest_checkpointed_iteration.txt last, so a resume never
        # points at a step folder whose DEPO state is missing or half written.
        if self.intake is not None:
            self._forget_evicted()
            checkpoint.save(
                self.config, self.global_steps, self.intake, self.estimator, in_flight=self.in_flight.state_dict()
            )
        super()._save_checkpoint()
        if self.intake is not None:
            for state in checkpoint.prune(self.config, self.global_steps):
                logger.info(f"removed {state}: verl removed that step's actor (trainer.max_actor_ckpt_to_keep)")

    def _load_checkpoint(self):
        super()._load_checkpoint()
        self.depo_resume_dir = None
        if self.intake is not None and self.global_steps > 0:
            self.depo_resume_dir = checkpoint.locate(self.config, self.depo.checkpoint.require_state)
            if self.depo_resume_dir:
                # Before the estimator worker starts: refuse what cannot apply, say what changed.
                for change in checkpoint.check_settings(self.depo_resume_dir, self.depo.estimator, self.depo.filter):
                    logger.warning(f"DEPO resumes from {self.depo_resume_dir} with a changed setting: {change}")

    def _forget_evicted(self) -> None:
        """Drop the predictions of prompts verl no longer holds (evicted by DAPO's group filter or
        for staleness, never trained), so neither memory nor the checkpoint grows with them."""
        import transfer_queue as tq

        listed = tq.kv_list("train") or {}
        self.in_flight.drop_missing({str(key).split("_", 1)[0] for key in listed.get("train", {})})


# One DEPO trainer per verl mode, each registered under verl's own mode name inside the task runner
# (recipe.depo.main_depo), so every `trainer_mode` branch of verl behaves as for plain GRPO.
class DEPOTrainer(DEPOTrainerMixin, PPOTrainerSync):
    pass


class DEPOTrainerColocateAsync(DEPOTrainerMixin, PPOTrainerColocateAsync):
    pass


class DEPOTrainerSeparateAsync(DEPOTrainerMixin, PPOTrainerSeparateAsync):
    pass


TRAINERS = {"sync": DEPOTrainer, "colocate_async": DEPOTrainerColocateAsync, "separate_async": DEPOTrainerSeparateAsync}
