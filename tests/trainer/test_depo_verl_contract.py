"""What DEPOTrainer assumes of verl 0.9.1's V1 trainer, checked by running verl's own code on small
fakes (no Ray, no workers). Each test names one entry of docs/verl_surface.md; a verl upgrade that
changes the behaviour fails here with that name instead of mid-training. What only a real run can
show (fit's order around TransferQueue, masks reaching the engine's loss) is checked end to end in
tests/e2e/test_depo_e2e.py.
"""

import inspect
import os

import numpy as np
import pytest
import torch
from depo_helpers import config_with
from verl.trainer.ppo.v1 import trainer_base
from verl.trainer.ppo.v1.trainer_base import PPOTrainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.utils import tensordict_utils as tu

from recipe.depo import checkpoint
from recipe.depo.trainer import TRAINERS, DEPOTrainer, DEPOTrainerMixin

OVERRIDDEN = {
    "_next_train_batch": ["self", "num_prompts"],
    "_compute_advantage": ["self", "batch", "metrics"],
    "step": ["self", "metrics", "timing_raw"],
    "_save_checkpoint": ["self"],
    "_load_checkpoint": ["self"],
    "on_init_end": ["self"],
    "_build_replay_buffer": ["self"],
}


@pytest.mark.parametrize("name, params", OVERRIDDEN.items())
def test_overridden_hooks_keep_their_signature(name, params):
    assert list(inspect.signature(getattr(PPOTrainer, name)).parameters) == params, f"verl changed {name}"
    assert name in DEPOTrainerMixin.__dict__


def test_only_the_named_hooks_are_overridden():
    own = {k for k, v in DEPOTrainerMixin.__dict__.items() if callable(v) and not k.startswith("__")}
    inherited = {k for k in own if hasattr(PPOTrainerSync, k)}
    assert inherited == set(OVERRIDDEN), f"DEPOTrainer overrides more verl methods than documented: {inherited}"


def test_replay_buffer_drops_groups_through_the_methods_depo_labels_from():
    """docs/verl_surface.md #20: both of verl's buffers clear every dropped group through
    `_clear_groups`, evictions from `_evict_terminal_groups` with (stale, dapo, failed, counts)."""
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer, ReplayBufferAsync

    from recipe.depo.dynamic_sampling import UntrainedGroups
    from recipe.depo.labels import LabelsConfig

    expected = {
        "_clear_groups": ["self", "partition_id", "uids"],
        "_evict_terminal_groups": ["self", "global_steps", "partition_id", "eviction_reasons"],
    }
    for cls in (ReplayBuffer, ReplayBufferAsync):
        for name, params in expected.items():
            assert list(inspect.signature(getattr(cls, name)).parameters) == params, f"verl changed {name}"
        buffer = cls(
            trainer_mode="sync" if cls is ReplayBuffer else "colocate_async",
            trainer_config={},
            max_off_policy_threshold=None,
            max_off_policy_strategy="drop",
            sampler_kwargs={},
            refill_fn=lambda n: n,
            filter_groups_metric="acc",
            train_batch_size=4,
            gen_batch_size=1,
        )
        assert UntrainedGroups(LabelsConfig()).attach(buffer)
        assert isinstance(buffer, cls) and type(buffer).__name__ == f"DEPOLabelled{cls.__name__}"
        assert isinstance(buffer.finished_keys["train"], set) and isinstance(buffer.partitions["train"], dict)
    assert not UntrainedGroups(LabelsConfig()).attach(object())  # a custom sampler: warned, not labelled


# ----------------------------------------------------------------------------- fakes
class _FakeTQ:
    """Stands in for the transfer_queue module inside verl's trainer_base."""

    def __init__(self):
        self.puts = []

    def kv_batch_put(self, keys, partition_id, tags=None, fields=None):
        self.puts.append((list(keys), partition_id, fields))


class _AgentLoop:
    def __init__(self):
        self.batches = []

    def generate_sequences(self, batch):
        self.batches.append(batch)


class _Actor:
    def __init__(self):
        self.saved, self.loaded = [], []

    def save_checkpoint(self, local_path, *args, **kwargs):
        os.makedirs(local_path, exist_ok=True)
        self.saved.append(os.path.abspath(local_path))

    def load_checkpoint(self, local_path, **kwargs):
        self.loaded.append(os.path.abspath(local_path))


class _Loader:
    def __init__(self, batches=()):
        self.batches = list(batches)

    def __iter__(self):
        return iter([dict(b) for b in self.batches])

    def state_dict(self):
        return {"fake": True}

    def load_state_dict(self, state):
        self.state = state


def _rows(n, start=0):
    return tu.get_tensordict({"uid": [f"u{start + i}" for i in range(n)], "x": torch.arange(start, start + n)})


# ----------------------------------------------------------------------------- intake
def test_every_intake_path_goes_through_next_train_batch(depo_env, monkeypatch):
    """prepare_step and the replay buffer's refill both ask `_next_train_batch` and submit what it gives."""
    asked = []

    class Recording(PPOTrainerSync):
        def _next_train_batch(self, num_prompts=None):
            asked.append(num_prompts)
            return _rows(num_prompts or 4, start=len(asked) * 10)

    trainer = Recording(config_with(depo_env, depo__enable=False))
    trainer.global_steps, trainer.agent_loop_manager = 1, _AgentLoop()
    monkeypatch.setattr(trainer_base, "tq", fake_tq := _FakeTQ())
    trainer.prepare_step()
    trainer.replay_buffer.refill_fn(3)
    assert asked == [None, 3]
    assert [tu.get(b, "uid") for b in trainer.agent_loop_manager.batches] == [
        tu.get(_rows(4, 10), "uid"),
        tu.get(_rows(3, 20), "uid"),
    ]
    assert [keys for keys, _, _ in fake_tq.puts] == [["u10", "u11", "u12", "u13"], ["u20", "u21", "u22"]]


def test_fetch_one_gen_batch_gives_fresh_uids_and_restarts_the_epoch(depo_env):
    batch = {"raw_prompt": np.array([[{"role": "user", "content": "1+1"}]] * 2, dtype=object)}
    trainer = PPOTrainerSync(config_with(depo_env, depo__enable=False))
    trainer.train_dataloader, trainer.train_dataloader_it = _Loader([batch]), None
    first, second = trainer._fetch_one_gen_batch(), trainer._fetch_one_gen_batch()  # second: a new epoch
    uids = tu.get(first, "uid") + tu.get(second, "uid")
    assert len(first) == len(second) == 2 and len(set(uids)) == 4 and all(isinstance(u, str) for u in uids)


def test_the_sync_mode_is_kept(depo_env):
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

    trainer = DEPOTrainer(config_with(depo_env))
    assert trainer.trainer_mode == "sync" and type(trainer.replay_buffer) is ReplayBuffer


# ----------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("mode", ["auto", "resume_path"])
def test_depo_state_lives_in_the_folder_verl_saves_and_resumes(depo_env, tmp_path, monkeypatch, mode):
    monkeypatch.chdir(tmp_path)
    saver = PPOTrainerSync(config_with(depo_env, trainer__default_local_dir="ckpt"))
    saver.actor_rollout_wg, saver.train_dataloader, saver.global_steps = _Actor(), _Loader(), 5
    saver._save_checkpoint()
    step_folder = checkpoint.step_folder(saver.config, 5)
    assert saver.actor_rollout_wg.saved == [os.path.abspath(os.path.join(step_folder, "actor"))]
    # verl marks the checkpoint complete last (DEPOTrainer writes its state before calling this)
    assert (tmp_path / "ckpt" / "latest_checkpointed_iteration.txt").read_text() == "5"

    values = {"trainer__default_local_dir": "ckpt", "trainer__resume_mode": mode}
    if mode == "resume_path":
        values["trainer__resume_from_path"] = "ckpt/global_step_5"
    loader = PPOTrainerSync(config_with(depo_env, **values))
    loader.actor_rollout_wg, loader.train_dataloader = _Actor(), _Loader()
    loader._load_checkpoint()
    assert loader.global_steps == 5
    resumed = checkpoint.resumed_folder(loader.config)
    assert loader.actor_rollout_wg.loaded == [os.path.join(resumed, "actor")]
    assert resumed == os.path.abspath(step_folder)


def test_no_resume_folder_when_verl_starts_fresh(depo_env, tmp_path):
    for values in ({"trainer__resume_mode": "disable"}, {"trainer__default_local_dir": str(tmp_path / "empty")}):
        trainer = PPOTrainerSync(config_with(depo_env, **values))
        trainer.actor_rollout_wg = _Actor()
        trainer._load_checkpoint()
        assert trainer.global_steps == 0 and checkpoint.resumed_folder(trainer.config) is None


# ----------------------------------------------------------------------------- advantages
def test_registered_grpo_depo_runs_through_verls_advantage_path():
    """verl's V1 advantage step finds grpo_depo by name and hands it the uid index and the config."""
    from omegaconf import OmegaConf
    from verl.protocol import DataProto
    from verl.trainer.ppo import core_algos
    from verl.trainer.ppo.v1.utils import compute_advantage_for_multi_trajectories

    import recipe.depo.advantage  # noqa: F401  (registers grpo_depo)

    assert core_algos.get_adv_estimator_fn("grpo_depo") is recipe.depo.advantage.compute_grpo_depo_advantage
    uids = ["mixed"] * 3 + ["flat"] * 3
    scores = torch.tensor([1.0, 0.0, 0.0, 0.1, 0.1, 0.1])

    def run(estimator, norm):
        rewards = torch.zeros(6, 2)
        rewards[:, -1] = scores
        data = DataProto.from_dict(
            tensors={"token_level_rewards": rewards, "response_mask": torch.ones(6, 2)},
            non_tensors={"uid": np.array(uids, dtype=object)},
        )
        config = OmegaConf.create({"norm_adv_by_std_in_grpo": norm})
        keys = [f"{u}_{i}_0" for i, u in enumerate(uids)]
        out = compute_advantage_for_multi_trajectories(
            data, batch_keys=keys, adv_estimator=estimator, num_repeat=3, norm_adv_by_std_in_grpo=norm, config=config
        )
        return out.batch["advantages"][:, 0]

    for norm in (True, False):
        depo, grpo = run("grpo_depo", norm), run("grpo", norm)
        torch.testing.assert_close(depo[:3], grpo[:3])
        assert torch.count_nonzero(depo[3:]) == 0  # three equal 0.1s: a group with no signal gets exact zeros
    # verl hands the registered estimator only `config`; without std-normalisation the values differ
    assert not torch.allclose(run("grpo_depo", True)[:3], run("grpo_depo", False)[:3])


# ----------------------------------------------------------------------------- task runner
def test_task_runner_resolves_the_trainer_through_the_registry():
    from verl.trainer.main_ppo import TaskRunnerV1

    from recipe.depo.main_depo import DEPOTaskRunner, mode_trainer_is

    assert set(TRAINERS) == set(trainer_base.TRAINER_REGISTRY), "verl's V1 modes changed"
    for mode, depo_cls in TRAINERS.items():
        verl_cls = trainer_base.get_trainer_cls(mode)
        # DEPO's hooks first, then exactly verl's trainer of that mode (its loop and hooks)
        assert depo_cls.__mro__[1:] == (DEPOTrainerMixin, *verl_cls.__mro__), mode
        with mode_trainer_is(mode, depo_cls):
            assert trainer_base.get_trainer_cls(mode) is depo_cls
        assert trainer_base.get_trainer_cls(mode) is verl_cls
    assert TRAINERS["sync"] is DEPOTrainer
    assert issubclass(DEPOTaskRunner, TaskRunnerV1.__ray_actor_class__)
