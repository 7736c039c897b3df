"""DEPOTrainer's hooks without model workers, as verl's own CPU trainer tests do it.

Real: the dataset and dataloader (a tiny parquet), the estimator worker (a tiny BERT in a Ray
worker group on CPU), TransferQueue, verl's checkpoint save/load. Not started: actor, rollout,
reward workers; the trajectories they would write to TransferQueue are written by the tests.
The intake's selection rules are tested without Ray in test_depo_intake.py.
"""

import dataclasses
import random

import numpy as np
import pytest
import ray
import torch
from depo_helpers import BATCH, config_with, dataset_questions, with_dataloader
from transfer_queue import KVBatchMeta
from verl.utils import tensordict_utils as tu

from recipe.depo.config_fields import DEPOConfigError
from recipe.depo.labels import LabelError, LabelsConfig, read_labels
from recipe.depo.prompt_text import prompt_text
from recipe.depo.trainer import DEPOTrainer

pytestmark = pytest.mark.ray


def _build(ray_env, **values):
    return with_dataloader(DEPOTrainer(config_with(ray_env, **values)), ray_env)


@pytest.fixture(scope="module")
def trainer(ray_env):
    t = _build(ray_env)
    t.start_estimator()
    # A fresh estimator predicts exactly 0.5 everywhere (zero-initialised heads). A few updates
    # on "longer sums are harder" spread the predictions.
    texts = dataset_questions(ray_env)
    mean_k = np.clip(1.2 - np.array([len(x) for x in texts]) / 25.0, 0.0, 1.0).astype(np.float32)
    for _ in range(5):
        t.estimator.update(texts, mean_k, np.full(len(texts), -1.0, np.float32))
    assert np.unique(t.estimator.predict(texts)).size > 20
    return t


def _texts(batch):
    return [prompt_text(p, e) for p, e in zip(tu.get(batch, "raw_prompt"), tu.get(batch, "extra_info"))]


def _new_step(trainer, step):
    trainer.global_steps = step
    trainer.intake.begin_step()


def test_next_train_batch_is_the_intake_scored_by_the_estimator_worker(trainer):
    _new_step(trainer, 1)  # warm-up (warmup_steps=1)
    batch = trainer._next_train_batch()
    assert batch.batch_size[0] == BATCH and tu.get_non_tensor_data(batch, "global_steps", None) == 1
    submitted = trainer.intake.submitted
    assert [s.reason for s in submitted.values()] == ["warmup"] * BATCH
    # the predictions the filter acted on are the worker's predictions for the bare problem text
    # Not bitwise: scored in other batches, so other padding, and once trained the calibration
    # map's slope scales that float noise in the logits (~1e-7) up to ~1e-5 in probability.
    np.testing.assert_allclose(
        trainer.estimator.predict(_texts(batch)), [s.prediction for s in submitted.values()], atol=1e-4
    )
    assert trainer._next_train_batch(1).batch_size[0] == 1  # the replay buffer's refill size


def _rollout_into_tq(trainer, scores, acc, lengths, padding_uid=None, shuffle_seed=0):
    """Write trajectories as verl's agent loop would (keys {uid}_{session}_0), shuffled."""
    import transfer_queue as tq
    from verl.utils import tensordict_utils as tu

    rows = []
    for uid in scores:
        for s, (score, a, n) in enumerate(zip(scores[uid], acc[uid], lengths[uid])):
            rows.append((f"{uid}_{s}_0", uid, score, a, n, False))
    if padding_uid is not None:
        rows.append((f"{padding_uid}_pad_0", padding_uid, 0.0, 0.0, 1, True))
    random.Random(shuffle_seed).shuffle(rows)
    keys = [r[0] for r in rows]

    def nested(vals):
        return torch.nested.as_nested_tensor(vals, layout=torch.jagged)

    rm, mask, lps = [], [], []
    for _, _, score, _, n, pad in rows:
        r = torch.zeros(n)
        r[-1] = score
        rm.append(r)
        mask.append(torch.zeros(n, dtype=torch.int64) if pad else torch.ones(n, dtype=torch.int64))
        lps.append(torch.full((n,), -0.5 if not pad else 0.0))
    fields = tu.get_tensordict(
        {
            "uid": [r[1] for r in rows],
            "rm_scores": nested(rm),
            "response_mask": nested(mask),
            "loss_mask": nested([m.clone() for m in mask]),
            "old_log_probs": nested(lps),
            "extra_fields": [{"reward_extra_info": {"acc": r[3], "score": r[2]}} for r in rows],
        }
    )
    tags = [{"status": "success", "is_padding": r[5]} for r in rows]
    tq.kv_batch_put(keys=keys, partition_id="train", fields=fields, tags=tags)
    return KVBatchMeta(partition_id="train", keys=keys, tags=tags)


def _clear(meta):
    import transfer_queue as tq

    tq.kv_clear(keys=meta.keys, partition_id=meta.partition_id)


def _verl_step_writing(acc_of_uids, lengths=2, padding=True):
    """Stands in for verl's step: takes a batch through the intake, then writes its rollout."""
    written = {}

    def step(self, metrics, timing_raw):
        uids = tu.get(self._next_train_batch(), "uid")
        acc = acc_of_uids(uids)
        lens = {u: [lengths + i for i in range(len(acc[u]))] for u in uids}
        written["meta"] = _rollout_into_tq(self, acc, acc, lens, padding_uid=uids[0] if padding else None)
        written["acc"] = acc
        return written["meta"]

    return step, written


def test_step_labels_prompts_by_uid_and_updates_the_estimator(trainer, monkeypatch):
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    step, written = _verl_step_writing(lambda u: {u[0]: [1, 1], u[1]: [0, 0], u[2]: [1, 0], u[3]: [0, 1]})
    monkeypatch.setattr(PPOTrainerSync, "step", step)
    updates = []
    real_update = trainer.estimator.update_async
    monkeypatch.setattr(trainer.estimator, "update_async", lambda *args: updates.append(args) or real_update(*args))
    before = trainer.estimator.num_updates()
    trainer.global_steps = 1
    metrics = {}
    try:
        assert trainer.step(metrics, {}) is written["meta"]
    finally:
        _clear(written["meta"])
    texts, mean_k, avg_lp = updates[0]
    submitted = trainer.intake.submitted
    expected = {submitted[u].text: np.mean(a) for u, a in written["acc"].items()}  # padding row excluded
    assert dict(zip(texts, mean_k.tolist())) == pytest.approx(expected)
    np.testing.assert_allclose(avg_lp, -0.5)
    assert metrics["depo/target_mean"] == pytest.approx(0.5)
    assert metrics["depo/distill_target_mean"] == pytest.approx(np.exp(-0.5), rel=1e-6)
    assert metrics["depo/estimator/num_updates"] == before + 1 == trainer.estimator.num_updates()
    assert metrics["depo/prompts_scanned_total"] >= BATCH and "depo/dataset_passes" in metrics
    assert metrics["depo/prompts_kept"] == BATCH and metrics["depo/kept_warmup"] == BATCH
    for key in ("depo/calib_mae", "depo/spearman", "depo/estimator/loss", "depo/estimator/ranking_loss"):
        assert key in metrics


@pytest.mark.parametrize("overlap", [True, False])
def test_the_estimator_update_is_sent_before_the_actor_update_when_overlapped(trainer, monkeypatch, overlap):
    """verl's step computes the actor's log-probs, then the advantage, then updates the actor.
    Overlapped, the estimator's update is sent from the advantage hook (so it runs while the actor
    updates) and waited for at the step's end; in series it is sent after verl's step. Either way
    it gets the same labels once and the step logs its metrics."""
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    sent = []
    real_update = trainer.estimator.update_async
    monkeypatch.setattr(trainer.estimator, "update_async", lambda *args: sent.append(args) or real_update(*args))
    estimator = dataclasses.replace(trainer.depo.estimator, overlap_update=overlap)
    monkeypatch.setattr(trainer, "depo", dataclasses.replace(trainer.depo, estimator=estimator))
    when = {}

    def verl_step(self, metrics, timing_raw):
        uids = tu.get(self._next_train_batch(), "uid")
        acc = {u: [1, 0] if i % 2 else [1, 1] for i, u in enumerate(uids)}
        meta = _rollout_into_tq(self, acc, acc, {u: [2, 3] for u in uids})
        when["meta"] = meta
        self._compute_advantage(meta, metrics)
        when["sent_before_actor_update"] = len(sent)
        return meta

    monkeypatch.setattr(PPOTrainerSync, "step", verl_step)
    before = trainer.estimator.num_updates()
    _new_step(trainer, 1)
    metrics, timing = {}, {}
    try:
        trainer.step(metrics, timing)
        # a second advantage call in the same step (none in verl's sync step) sends nothing more
        trainer._compute_advantage(when["meta"], {})
    finally:
        _clear(when["meta"])
    assert when["sent_before_actor_update"] == (1 if overlap else 0)
    assert len(sent) == 1 and trainer._learning is None
    texts, mean_k, _ = sent[0]
    submitted = trainer.intake.submitted
    assert sorted(mean_k.tolist()) == sorted([1.0, 0.5] * (BATCH // 2))
    assert set(texts) == {r.text for r in submitted.values()}
    assert metrics["depo/estimator/num_updates"] == before + 1 == trainer.estimator.num_updates()
    assert metrics["depo/target_mean"] == pytest.approx(0.75)
    assert "depo_estimator_update" in timing and "depo/prompts_kept" in metrics


def test_missing_correctness_key_stops_naming_the_setting(trainer):
    meta = _rollout_into_tq(trainer, {"a": [1, 0]}, {"a": [1, 0]}, {"a": [2, 2]})
    try:
        with pytest.raises(LabelError, match=r"depo\.labels\.acc_key"):
            read_labels(meta, LabelsConfig(acc_key="is_correct"))
        labels = read_labels(meta, LabelsConfig())
        assert labels.uids == ["a"] and labels.mean_k.tolist() == [0.5]
    finally:
        _clear(meta)


def test_advantage_hook_flags_zero_adv_groups_and_masks_exactly(trainer):
    import transfer_queue as tq
    from verl.trainer.ppo import core_algos
    from verl.trainer.ppo.core_algos import agg_loss

    scores = {"mixed": [1.0, 0.0, 1.0], "allwrong": [0.0, 0.0, 0.0], "allright": [1.0, 1.0, 1.0]}
    lengths = {"mixed": [2, 3, 4], "allwrong": [3, 1, 2], "allright": [5, 2, 2]}
    meta = _rollout_into_tq(trainer, scores, scores, lengths, padding_uid="mixed", shuffle_seed=3)
    trainer.zero_adv.mask = True
    try:
        metrics = {}
        trainer._compute_advantage(meta, metrics)
        assert metrics["depo/zero_adv_group_frac"] == pytest.approx(2 / 3)
        assert metrics["depo/masked_groups"] == 2
        real = [k for k, t in zip(meta.keys, meta.tags) if not t["is_padding"]]
        data = tq.kv_batch_get(
            keys=real,
            partition_id="train",
            select_fields=["uid", "response_mask", "loss_mask", "advantages", "rm_scores"],
        )
        uids = list(data["uid"])
        for i, uid in enumerate(uids):
            rm, lm = data["response_mask"][i], data["loss_mask"][i]
            assert int(rm.sum()) == (len(rm) if uid == "mixed" else 0)
            assert torch.equal(rm, lm)
        # advantages are verl's GRPO (computed on the same rows, padding included, as verl does)
        adv = torch.nested.to_padded_tensor(data["advantages"], 0.0)
        rewards = torch.nested.to_padded_tensor(data["rm_scores"], 0.0)
        mask = torch.nested.to_padded_tensor(data["response_mask"], 0)
        # token-mean over the masked batch = mean over the signal-carrying group's tokens only
        loss_mat = torch.ones_like(adv)
        assert agg_loss(loss_mat, mask.float(), "token-mean").item() == pytest.approx(1.0)
        assert float(mask.sum()) == sum(lengths["mixed"])
        assert torch.count_nonzero(adv[torch.tensor([u != "mixed" for u in uids])]) == 0
        ref_index = np.array(uids, dtype=object)
        ref, _ = core_algos.compute_grpo_outcome_advantage(rewards, torch.ones_like(rewards), ref_index)
        mixed = torch.tensor([u == "mixed" for u in uids])
        # padding row (score 0) sits in the "mixed" group in verl's computation; compare signs only
        assert torch.equal(torch.sign(adv[mixed].sum(-1)), torch.sign(ref[mixed][:, 0]))
        trainer.zero_adv.restore()
        data = tq.kv_batch_get(keys=real, partition_id="train", select_fields=["response_mask", "loss_mask"])
        for i in range(len(real)):
            assert int(data["response_mask"][i].sum()) == len(data["response_mask"][i])
            assert int(data["loss_mask"][i].sum()) == len(data["loss_mask"][i])
    finally:
        trainer.zero_adv.mask = False
        _clear(meta)


def test_all_zero_adv_batch_is_not_masked_into_a_zero_denominator(trainer):
    scores = {"a": [1.0, 1.0], "b": [0.0, 0.0]}
    meta = _rollout_into_tq(trainer, scores, scores, {"a": [2, 2], "b": [2, 2]})
    trainer.zero_adv.mask = True
    try:
        metrics = {}
        trainer._compute_advantage(meta, metrics)
        assert metrics["depo/zero_adv_group_frac"] == 1.0 and metrics["depo/masked_groups"] == 0
        assert not trainer.zero_adv.has_masked
    finally:
        trainer.zero_adv.mask = False
        _clear(meta)


# ----------------------------------------------------------------------------- checkpoints
class _NoActor:
    """verl's save/load call the actor group; there is none here."""

    def save_checkpoint(self, *args, **kwargs):
        return None

    def load_checkpoint(self, *args, **kwargs):
        return None


class _WeightSync:
    """verl's on_init_end pushes the actor's weights to the rollout; there is none here."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.estimator_ready = None

    def update_weights(self, global_steps):
        self.estimator_ready = self.trainer.estimator is not None


def _with_carry_over(ray_env, trainer, step):
    from recipe.depo.filter import FilterConfig
    from recipe.depo.intake import PromptIntake

    predictions = trainer.estimator.predict(dataset_questions(ray_env))
    window = tuple(float(q) for q in np.quantile(predictions, [0.3, 0.7]))
    trainer.intake = PromptIntake(
        FilterConfig(window=window, warmup_steps=0, explore_rate=0.3, max_scan=10_000, seed=5),
        text_source="auto",
        rollouts_per_prompt=2,
    )
    trainer.global_steps = step
    trainer._next_train_batch()
    while not trainer.intake.filter.carry:  # make sure there is carry-over to restore
        trainer._next_train_batch(1)


def test_checkpoint_round_trip_restores_estimator_and_intake(ray_env, trainer, tmp_path):
    trainer.config.trainer.default_local_dir = str(tmp_path / "ckpt")
    trainer.actor_rollout_wg = _NoActor()
    _with_carry_over(ray_env, trainer, step=11)
    trainer.estimator.update(["1 + 1", "9999 + 8888 + 7777"], np.array([1.0, 0.0]), np.array([-0.1, -2.0]))
    trainer._save_checkpoint()
    step_dir = tmp_path / "ckpt" / "global_step_11"
    assert (step_dir / "depo" / "state.json").is_file() and (step_dir / "depo" / "estimator").is_dir()
    assert (tmp_path / "ckpt" / "latest_checkpointed_iteration.txt").read_text() == "11"

    resumed = _build(ray_env, trainer__default_local_dir=str(tmp_path / "ckpt"), trainer__resume_mode="auto")
    resumed.intake = type(trainer.intake)(trainer.intake.filter.config, "auto", 2)
    resumed.actor_rollout_wg = _NoActor()
    resumed._load_checkpoint()
    assert resumed.global_steps == 11 and resumed.depo_resume_dir == str(step_dir / "depo")
    resumed.checkpoint_manager = sync = _WeightSync(resumed)
    resumed.on_init_end()
    try:
        assert sync.estimator_ready  # the estimator worker started before verl's weight sync
        assert resumed.intake.filter.state_dict() == trainer.intake.filter.state_dict()
        carried = [trainer.intake.text_of(a.payload) for a in trainer.intake.filter.carry]
        assert [resumed.intake.text_of(a.payload) for a in resumed.intake.filter.carry] == carried
        probe = carried + ["12 + 30"]
        np.testing.assert_array_equal(resumed.estimator.predict(probe), trainer.estimator.predict(probe))
        assert resumed.estimator.num_updates() == trainer.estimator.num_updates()
        # both continue identically: same prompts (dataloader state came from data.pt), same decisions
        for t in (trainer, resumed):
            _new_step(t, 12)
        a, b = trainer._next_train_batch(), resumed._next_train_batch()
        assert _texts(a) == _texts(b)
        assert [s.reason for s in trainer.intake.submitted.values()] == [
            s.reason for s in resumed.intake.submitted.values()
        ]
    finally:
        ray.kill(resumed.estimator.worker_group.workers[0])


def test_resume_with_changed_estimator_settings_logs_them_or_refuses_by_key(ray_env, trainer, tmp_path, caplog):
    trainer.config.trainer.default_local_dir = str(tmp_path / "ckpt")
    trainer.actor_rollout_wg = _NoActor()
    trainer.global_steps = 14
    trainer._save_checkpoint()
    ckpt = dict(trainer__default_local_dir=str(tmp_path / "ckpt"), trainer__resume_mode="auto")
    changed = _build(ray_env, depo__estimator__lr=5e-4, depo__filter__explore_rate=0.1, **ckpt)
    changed.actor_rollout_wg = _NoActor()
    with caplog.at_level("WARNING", logger="recipe.depo.trainer"):
        changed._load_checkpoint()
    said = [r.getMessage() for r in caplog.records if "changed setting" in r.getMessage()]
    assert any("depo.estimator.lr:" in m and "0.0005 now (applied)" in m for m in said), said
    assert any("depo.filter.explore_rate:" in m for m in said), said
    # Refused before any worker starts: the trained weights cannot take another pooling.
    refused = _build(ray_env, depo__estimator__pooling="mean", **ckpt)
    refused.actor_rollout_wg = _NoActor()
    with pytest.raises(DEPOConfigError, match=r"^depo\.estimator\.pooling: 'cls' in the checkpoint"):
        refused._load_checkpoint()
    assert refused.estimator is None


def test_checkpoint_is_complete_or_absent(ray_env, trainer, tmp_path, monkeypatch):
    trainer.config.trainer.default_local_dir = str(tmp_path / "ckpt")
    trainer.actor_rollout_wg = _NoActor()
    trainer.global_steps = 13

    def disk_full(path):
        raise OSError("disk full")

    monkeypatch.setattr(trainer.estimator, "save", disk_full)
    with pytest.raises(OSError):
        trainer._save_checkpoint()
    step_dir = tmp_path / "ckpt" / "global_step_13"
    assert not (step_dir / "depo").exists()
    assert not [p for p in step_dir.iterdir() if p.name.startswith(".depo")]
    assert not (tmp_path / "ckpt" / "latest_checkpointed_iteration.txt").exists()


def test_resuming_a_checkpoint_without_depo_state_is_refused(ray_env, tmp_path):
    ckpt = tmp_path / "ckpt"
    (ckpt / "global_step_3").mkdir(parents=True)
    (ckpt / "latest_checkpointed_iteration.txt").write_text("3")
    t = _build(ray_env, trainer__default_local_dir=str(ckpt), trainer__resume_mode="auto")
    t.actor_rollout_wg = _NoActor()
    with pytest.raises(RuntimeError, match=r"depo\.checkpoint\.require_state"):
        t._load_checkpoint()
    t = _build(
        ray_env,
        trainer__default_local_dir=str(ckpt),
        trainer__resume_mode="auto",
        depo__checkpoint__require_state=False,
    )
    t.actor_rollout_wg = _NoActor()
    t._load_checkpoint()
    assert t.global_steps == 3 and t.depo_resume_dir is None


def test_depo_off_is_plain_verl_intake(ray_env):
    for values in ({"depo__enable": False}, {"depo__filter__enable": False}):
        t = _build(ray_env, **values)
        assert t.intake is None and not t.depo.uses_estimator
        # verl's own intake: whole gen_batch_size (3) fetches only
        with pytest.raises(ValueError, match="multiple of gen_batch_size"):
            t._next_train_batch(4)
        assert t._next_train_batch(3).batch_size[0] == 3 and t.estimator is None


def test_shadow_mode_trains_on_verls_own_batches_and_history_selectors_start_no_estimator(
    ray_env, trainer, monkeypatch
):
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    # shadow: the batch is exactly plain verl's (same seed, same prompts in the same order), scored on the side
    shadow, plain = _build(ray_env, depo__filter__mode="shadow"), _build(ray_env, depo__enable=False)
    shadow.estimator = trainer.estimator  # the running worker (shadow scores with it)
    for step in (1, 2, 3):
        _new_step(shadow, step)
        a, b = shadow._next_train_batch(3), plain._next_train_batch(3)
        assert _texts(a) == _texts(b) and tu.get(a, "uid") != tu.get(b, "uid")  # uids are per draw
        assert [s.reason for s in shadow.intake.submitted.values()] == ["shadow"] * 3
        assert set(shadow.intake.would_reject) == set(tu.get(a, "uid"))
    # greso and posterior read no estimator: on_init_end starts none (depo does), the intake draws without one
    monkeypatch.setattr(PPOTrainerSync, "on_init_end", lambda self: None)  # verl's weight sync needs workers
    started = []
    monkeypatch.setattr(DEPOTrainer, "start_estimator", lambda self: started.append(self.depo.filter.selector.name))
    for name in ("greso", "posterior", "depo"):
        t = _build(ray_env, depo__filter__selector__name=name)
        t.on_init_end()
        assert t.intake is not None and t.depo.uses_estimator == (name == "depo")
        if name != "depo":
            _new_step(t, 2)
            assert t._next_train_batch().batch_size[0] == BATCH and t.estimator is None
            assert t.intake.filter.selector.name == name and t.intake.filter.selector.counters["decided"] >= BATCH
    assert started == ["depo"]


PATTERNS = ([1, 1], [0, 0], [1, 0], [0, 1])  # in turn, by submission: all right, all wrong, mixed, mixed


def test_dynamic_sampling_labels_the_groups_verl_drops_untrained_once(ray_env, trainer, monkeypatch):
    """verl's own sync replay buffer with DAPO's group filter (algorithm.filter_groups): it evicts
    the all-right and all-wrong groups, refills through DEPO's intake, and discards the surplus;
    DEPO learns every finished group once, trained or not. The rollout is written to TransferQueue
    by the test (no model workers), as verl's agent loop would, all groups finished at once."""
    import transfer_queue as tq
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    t = _build(ray_env, algorithm__filter_groups__enable=True, algorithm__filter_groups__metric="acc")
    assert type(t.replay_buffer).__name__ == "DEPOLabelledReplayBuffer"
    t.estimator = trainer.estimator  # the running worker
    rolled = {}

    def rollout(batch):
        uids = [str(u) for u in tu.get(batch, "uid")]
        acc = {u: PATTERNS[(len(rolled) + i) % 4] for i, u in enumerate(uids)}
        tags = [{"is_prompt": True, "status": "finished", "global_steps": t.global_steps}] * len(uids)
        tq.kv_batch_put(keys=uids, partition_id="train", tags=tags)
        _rollout_into_tq(t, acc, acc, {u: [2, 3] for u in uids})
        rolled.update(acc)
        return len(uids)

    def verl_step(self, metrics, timing_raw):  # verl's step up to the sampled batch
        self.prepare_step()
        batch, sample_metrics = self.replay_buffer.sample(self.global_steps, "train", BATCH)
        metrics.update(sample_metrics)
        return batch

    monkeypatch.setattr(t, "_submit_batch_to_rollout", rollout)
    monkeypatch.setattr(PPOTrainerSync, "step", verl_step)
    updates = []
    real_update = trainer.estimator.update_async
    monkeypatch.setattr(trainer.estimator, "update_async", lambda *args: updates.append(args) or real_update(*args))
    labelled = set()
    for step in (1, 2):  # warm-up, then filtered
        t.global_steps, metrics, updates[:] = step, {}, []
        rolled.clear()
        meta = t.step(metrics, {})
        _clear(meta)
        trained = {str(k).split("_")[0] for k in meta.keys}
        assert len(trained) == BATCH and all(0 < np.mean(rolled[u]) < 1 for u in trained)
        dropped = set(rolled) - trained
        evicted = {u for u in dropped if np.mean(rolled[u]) in (0.0, 1.0)}
        assert evicted and metrics["training/filter_groups/evicted_samples"] == len(evicted)
        assert metrics["depo/dynsamp/evicted_labelled"] == len(evicted)
        surplus = metrics.get("training/filter_groups/discarded_surplus_samples", 0)
        assert metrics["depo/dynsamp/surplus_labelled"] == surplus == len(dropped - evicted)
        assert metrics["depo/generation_rounds"] > 1  # the refills went through DEPO's intake
        # one estimator update on every group rolled out this step, each once; the dropped ones
        # without log-probs (never computed by the actor), the trained ones with them
        ((texts, mean_k, avg_lp),) = updates
        submitted = {u: s.text for u, s in t.intake.submitted.items() if u in rolled}
        assert sorted(texts) == sorted(submitted.values()) and len(texts) == len(rolled)
        by_text = dict(zip(texts, zip(mean_k.tolist(), avg_lp.tolist())))
        for uid, text in submitted.items():
            target, lp = by_text[text]
            assert target == np.mean(rolled[uid])
            assert np.isnan(lp) if uid in dropped else lp == pytest.approx(-0.5)
        assert metrics["depo/labels_without_logprob"] == len(dropped) and metrics["depo/dynsamp/labelled"] == len(
            rolled
        )
        assert not t.in_flight.records and not labelled & set(rolled)  # nothing left in flight, nothing twice
        labelled |= set(rolled)
        # the selector's audit and calibration saw the evicted groups too
        assert metrics["depo/target_mean"] == pytest.approx(np.mean([np.mean(rolled[u]) for u in rolled]))
    assert not (tq.kv_list("train") or {}).get("train")
