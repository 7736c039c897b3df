"""DEPO's trainers over verl's asynchronous V1 trainers, without model workers.

Real: verl's `PPOTrainerColocateAsync` / `PPOTrainerSeparateAsync` constructors (their own config
assertions and `ReplayBufferAsync`), their warm-up (`on_train_begin` -> `_add_async_warmup_batches`),
`prepare_step`, the replay buffer's refill, TransferQueue (prompt rows persisted with their fields, as
verl does for async checkpoints), the dataset and dataloader, the estimator worker (a tiny BERT in a
Ray worker group). Not started: actor, rollout and reward workers; `separate_async` needs a weight-sync
engine other than verl's `naive` one, and every other one needs a GPU library (docs/cpu.md), so this is
how much of that mode runs on CPU. The trajectories verl's agent loop would write are written by the
tests, with the policy-version tags verl's rollout client stamps.
"""

import numpy as np
import pytest
import torch
from depo_helpers import BATCH, config_with, with_dataloader
from transfer_queue import KVBatchMeta
from verl.utils import tensordict_utils as tu

from recipe.depo.trainer import DEPOTrainerColocateAsync, DEPOTrainerSeparateAsync

pytestmark = pytest.mark.ray

MODES = {
    "colocate_async": (DEPOTrainerColocateAsync, {}),
    "separate_async": (
        DEPOTrainerSeparateAsync,
        {
            # verl's own requirements of the mode (asserted in its constructor)
            "actor_rollout_ref__rollout__checkpoint_engine__backend": "nccl",
            "actor_rollout_ref__rollout__nnodes": 1,
            "actor_rollout_ref__rollout__n_gpus_per_node": 1,
            "trainer__v1__separate_async__parameter_sync_step": 1,
            "actor_rollout_ref__actor__ppo_mini_batch_size": BATCH,
        },
    ),
}


@pytest.fixture(scope="module")
def estimator(ray_env):
    from recipe.depo.trainer import DEPOTrainer

    t = with_dataloader(DEPOTrainer(config_with(ray_env)), ray_env)
    t.start_estimator()
    return t.estimator


class _AgentLoop:
    def __init__(self):
        self.batches = []

    def generate_sequences(self, batch):
        self.batches.append(batch)


def _build(ray_env, estimator, mode, **values):
    cls, required = MODES[mode]
    cfg = config_with(ray_env, trainer__v1__trainer_mode=mode, **required, **values)
    trainer = with_dataloader(cls(cfg), ray_env)
    trainer.estimator = estimator
    trainer.agent_loop_manager = _AgentLoop()
    if mode == "separate_async":
        from verl.trainer.ppo.v1.trainer_separate_async import HybridEngineMode

        # set by verl's _setup (which starts the workers): the trainer's devices are training
        trainer.current_mode = HybridEngineMode.TRAINER
    return trainer


def _write_rollouts(uids, acc, versions):
    """Trajectories as verl's agent loop writes them: keys {uid}_{session}_0, version tags per response."""
    import transfer_queue as tq

    keys, rows, tags = [], [], []
    for uid in uids:
        for s, a in enumerate(acc[uid]):
            keys.append(f"{uid}_{s}_0")
            rows.append((uid, a))
            lo, hi = versions[uid]
            tags.append({"status": "success", "is_padding": False, "min_global_steps": lo, "max_global_steps": hi})

    def nested(vals):
        return torch.nested.as_nested_tensor(vals, layout=torch.jagged)

    fields = tu.get_tensordict(
        {
            "uid": [u for u, _ in rows],
            "rm_scores": nested([torch.tensor([0.0, float(a)]) for _, a in rows]),
            "response_mask": nested([torch.ones(2, dtype=torch.int64) for _ in rows]),
            "loss_mask": nested([torch.ones(2, dtype=torch.int64) for _ in rows]),
            "old_log_probs": nested([torch.full((2,), -0.5) for _ in rows]),
            "extra_fields": [{"reward_extra_info": {"acc": a, "score": a}} for _, a in rows],
        }
    )
    tq.kv_batch_put(keys=keys, partition_id="train", fields=fields, tags=tags)
    return KVBatchMeta(partition_id="train", keys=keys, tags=tags)


@pytest.mark.parametrize("mode", list(MODES))
def test_async_warmup_step_and_refill_go_through_the_filter(ray_env, estimator, mode, monkeypatch):
    import transfer_queue as tq

    trainer = _build(ray_env, estimator, mode, depo__filter__warmup_steps=0, **{"depo__filter__window": [0.0, 0.2]})
    from verl.trainer.ppo.v1.replay_buffer import ReplayBufferAsync

    assert trainer.trainer_mode == mode and type(trainer.replay_buffer) is ReplayBufferAsync
    assert trainer.config.data.gen_batch_size == 1  # verl's exact refills in async modes
    # a fresh estimator predicts 0.5 everywhere: outside [0, 0.2], so the scan cap's fill decides
    trainer.global_steps = 1
    trainer.on_train_begin()  # verl's warm-up batch, generated ahead of step 1
    trainer.prepare_step()  # step 1's own batch
    trainer.replay_buffer.refill_fn(2)  # what verl asks after evicting two groups
    batches = trainer.agent_loop_manager.batches
    assert [len(b) for b in batches] == [BATCH, BATCH, 2]
    submitted = [str(u) for b in batches for u in tu.get(b, "uid")]
    # every prompt sent to rollout was scored and decided by DEPO's filter, and is in flight
    assert set(trainer.in_flight.records) == set(submitted) and len(set(submitted)) == len(submitted)
    assert {r.reason for r in trainer.in_flight.records.values()} == {"fill"}
    assert trainer.intake.filter.counters["scanned"] >= len(submitted)
    # verl persisted the prompt rows (async checkpoint recovery re-issues them from here)
    listed = tq.kv_list("train")["train"]
    assert set(submitted) <= set(listed)

    # verl's step trains the warm-up batch, generated by version 0 and 1 (a partial rollout across
    # the weight sync), at step 2 (updating version 1)
    warm = [str(u) for u in tu.get(batches[0], "uid")]
    acc = {u: [1, 0] if i % 2 else [1, 1] for i, u in enumerate(warm)}
    meta = {}

    def verl_step(self, metrics, timing_raw):
        meta["batch"] = _write_rollouts(warm, acc, {u: (0, 1) for u in warm})
        return meta["batch"]

    monkeypatch.setattr(type(trainer).__mro__[2], "step", verl_step)
    trainer.global_steps = 2
    metrics = {}
    try:
        assert trainer.step(metrics, {}) is meta["batch"]
    finally:
        tq.kv_clear(keys=meta["batch"].keys, partition_id="train")
    assert metrics["depo/target_mean"] == pytest.approx(0.75)
    # scored at step 1 (version 0 in use), generated by versions 0..1, trained at step 2, the
    # estimator having learnt nothing when it scored (-1)
    assert metrics["depo/staleness/score_to_gen_mean"] == 1 and metrics["depo/staleness/gen_to_train_max"] == 1
    assert metrics["depo/staleness/outcome_to_gen_mean"] == 2
    assert trainer.in_flight.learned_version == 1
    # the trained prompts left; the rest stay in flight, and prompts verl evicted are forgotten
    assert not set(warm) & set(trainer.in_flight.records)
    left = [u for u in submitted if u not in warm]
    tq.kv_clear(keys=left[:2], partition_id="train")
    trainer._forget_evicted()
    assert set(trainer.in_flight.records) == set(left[2:])
    tq.kv_clear(keys=left[2:], partition_id="train")


def test_verl_refuses_separate_async_with_the_naive_weight_sync(ray_env, estimator):
    """The mode's own assertion, which DEPO's start-up check (validation) now states before Ray."""
    cfg = config_with(ray_env, trainer__v1__trainer_mode="separate_async")
    with pytest.raises(AssertionError, match="train_batch_size must equal parameter_sync_step"):
        DEPOTrainerSeparateAsync(cfg)
    values = dict(MODES["separate_async"][1], actor_rollout_ref__rollout__checkpoint_engine__backend="naive")
    with pytest.raises(AssertionError, match="nccl/nixl/mooncake"):
        DEPOTrainerSeparateAsync(config_with(ray_env, trainer__v1__trainer_mode="separate_async", **values))
    assert np.isfinite(estimator.num_updates())
