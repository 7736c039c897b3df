"""DEPOTrainer without model workers, as verl's own CPU trainer tests do it.

Real: the dataset and dataloader (a tiny parquet written here), the estimator worker (a tiny
BERT in a Ray worker group on CPU), TransferQueue. Not started: actor, rollout, reward workers;
the trajectories they would write to TransferQueue are written by the tests.
"""

import copy
import dataclasses
import os
import random

import numpy as np
import pandas as pd
import pytest
import ray
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from transfer_queue import KVBatchMeta
from verl.utils import tensordict_utils as tu

import recipe.depo
from recipe.depo.estimator import build_tiny_encoder
from recipe.depo.filter import DifficultyFilter, FilterConfig
from recipe.depo.labels import LabelError, prompt_text
from recipe.depo.trainer import DEPOTrainer

pytestmark = pytest.mark.ray
CONFIG_DIR = os.path.join(os.path.dirname(recipe.depo.__file__), "config")
BATCH = 4


def _problems(n, seed=0):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        terms = [str(rng.randint(1, 10 ** rng.randint(1, 4))) for _ in range(rng.randint(2, 5))]
        question = " + ".join(terms)
        rows.append(
            {
                "data_source": "arithmetic",
                "prompt": [
                    {"role": "system", "content": "Put the answer in \\boxed{}."},
                    {"role": "user", "content": f"What is {question}?"},
                ],
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": str(sum(map(int, terms)))},
                "extra_info": {"index": i, "question": question},
            }
        )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("depo_intake")
    encoder = build_tiny_encoder(str(root / "encoder"), hidden_size=32, num_layers=1, num_heads=2, dropout=0.0)
    _problems(96).to_parquet(root / "train.parquet")
    _problems(8, seed=1).to_parquet(root / "val.parquet")
    ray.init(num_cpus=8, include_dashboard=False, ignore_reinit_error=True)
    import transfer_queue as tq

    with initialize_config_dir(CONFIG_DIR, version_base=None):
        base = compose(
            "depo_trainer",
            overrides=[
                f"data.train_files={root / 'train.parquet'}",
                f"data.val_files={root / 'val.parquet'}",
                f"data.train_batch_size={BATCH}",
                "data.gen_batch_size=3",
                "data.filter_overlong_prompts=false",
                "data.dataloader_num_workers=0",
                "actor_rollout_ref.rollout.n=2",
                "actor_rollout_ref.actor.ppo_mini_batch_size=2",
                "reward.custom_reward_function.path=pkg://recipe.depo.reward",
                f"trainer.default_local_dir={root / 'ckpt'}",
                f"depo.estimator.backbone={encoder}",
                "depo.estimator.placement=cpu",
                "depo.estimator.hidden_dims=[16]",
                "depo.estimator.dropout=0.0",
                "depo.estimator.max_length=32",
                "depo.estimator.micro_batch_size=4",
                "depo.filter.warmup_steps=1",
            ],
        )
    tq_cfg = copy.deepcopy(base.transfer_queue)
    tq_cfg.backend.SimpleStorage.num_data_storage_units = 1
    tq.init(tq_cfg)
    yield {"root": root, "base": base, "encoder": encoder}
    tq.close()
    ray.shutdown()


def _build(env, **values):
    from transformers import AutoTokenizer

    cfg = copy.deepcopy(env["base"])
    for key, value in values.items():
        OmegaConf.update(cfg, key.replace("__", "."), value, force_add=True)
    trainer = DEPOTrainer(cfg)
    trainer.tokenizer = AutoTokenizer.from_pretrained(env["encoder"])
    trainer.processor = None
    trainer._init_dataloader()
    trainer.global_steps = 1
    return trainer


@pytest.fixture(scope="module")
def trainer(env):
    t = _build(env)
    t._init_estimator_worker()
    # A fresh estimator predicts exactly 0.5 everywhere (zero-initialised heads). A few updates
    # on "longer sums are harder" spread the predictions, so a window can split the population.
    texts = _dataset_texts(t)
    mean_k = np.clip(1.2 - np.array([len(x) for x in texts]) / 25.0, 0.0, 1.0)
    for _ in range(5):
        t._estimator_call("update", texts, mean_k.astype(np.float32), np.full(len(texts), -1.0, np.float32))
    preds = _predict(t, texts)
    assert np.unique(preds).size > 20, preds
    return t


def _texts(batch):
    return [prompt_text(rp, ei) for rp, ei in zip(batch.get("raw_prompt").tolist(), batch.get("extra_info").tolist())]


def _predict(trainer, texts):
    return np.asarray(trainer._estimator_call("predict", list(texts)), dtype=np.float64)


def _set_filter(trainer, **kw):
    trainer.depo_filter = DifficultyFilter(FilterConfig(**kw))
    trainer._carry_rows = {}


def _dataset_texts(trainer):
    # what the estimator reads by default (text_source=auto): the bare problem in extra_info
    df = pd.read_parquet(trainer.config.data.train_files)
    return [e["question"] for e in df["extra_info"]]


def _all_predictions(trainer):
    return _predict(trainer, _dataset_texts(trainer))


def _window_around_median(preds):
    lo, hi = np.quantile(preds, [0.3, 0.7])
    return float(lo), float(hi)


def test_warmup_keeps_every_drawn_prompt(trainer):
    _set_filter(trainer, low=0.15, high=0.85, warmup_steps=1, max_scan=64)
    trainer.global_steps = 1
    trainer._step_prompts, trainer._intake = {}, type(trainer._intake)()
    batch = trainer._next_train_batch()
    assert batch.batch_size[0] == BATCH
    kept = list(trainer._step_prompts.values())
    assert [a.reason for _, a in kept] == ["warmup"] * BATCH
    # gen_batch_size=3: two fetches for 4 prompts, the 2 surplus are carried, not dropped
    assert trainer._intake.scanned == 6 and len(trainer.depo_filter.carry) == 2
    assert set(trainer._carry_rows) == {a.key for a in trainer.depo_filter.carry}
    assert len(set(batch.get("uid").tolist())) == BATCH
    assert tu.get_non_tensor_data(batch, "global_steps", None) == 1
    # the estimator read the bare problem (not the template), and the stored prediction is its own
    texts = _texts(batch)
    assert [t for t, _ in kept] == texts
    assert all("+" in t and "What is" not in t and "boxed" not in t for t in texts)
    # Not bitwise: scored in other batches, so other padding; the calibration map's slope scales
    # that float noise in the logits (~1e-7) up to ~1e-5 in probability.
    np.testing.assert_allclose(_predict(trainer, texts), [a.prediction for _, a in kept], atol=1e-4)
    m = trainer._intake_metrics()
    assert m["depo/warmup_active"] == 1.0 and m["depo/survival_rate"] == 1.0 and m["depo/kept_warmup"] == BATCH
    # Over all 6 scanned prompts (warm-up keeps everything, so their own in-window share shows).
    scanned = trainer._intake.scanned_predictions
    assert len(scanned) == 6 and m["depo/scanned_pred_mean"] == pytest.approx(np.mean(scanned))
    assert m["depo/scanned_in_window"] == pytest.approx(np.mean([0.15 <= p <= 0.85 for p in scanned]))
    total = trainer.depo_filter.counters["scanned"]
    assert m["depo/prompts_scanned_total"] == total and total >= 6
    assert m["depo/dataset_passes"] == pytest.approx(total / len(trainer.train_dataset))


def test_after_warmup_every_kept_prompt_is_in_window_with_carry_over(trainer):
    low, high = _window_around_median(_all_predictions(trainer))
    _set_filter(trainer, low=low, high=high, warmup_steps=1, max_scan=10_000)
    carried_before = None
    for step in (2, 3, 4):
        trainer.global_steps = step
        trainer._step_prompts, trainer._intake = {}, type(trainer._intake)()
        batch = trainer._next_train_batch()
        assert batch.batch_size[0] == BATCH
        preds = _predict(trainer, _texts(batch))
        assert np.all((preds >= low - 1e-6) & (preds <= high + 1e-6)), preds
        reasons = [a.reason for _, a in trainer._step_prompts.values()]
        assert reasons == ["window"] * BATCH
        uids = batch.get("uid").tolist()
        if carried_before:
            # carried prompts are rolled out first, not thrown away
            assert uids[: len(carried_before)] == carried_before[:BATCH]
        carried_before = [a.key for a in trainer.depo_filter.carry]
        assert set(trainer._carry_rows) == set(carried_before)
        m = trainer._intake_metrics()
        assert m["depo/warmup_active"] == 0.0 and m["depo/prompts_kept"] == BATCH
        assert 0.0 <= m["depo/survival_rate"] <= 1.0
    f = trainer.depo_filter.counters
    assert f["rejected"] > 0
    assert trainer._intake_metrics()["depo/rollouts_saved"] == 2 * f["rejected"]


def test_exploration_admits_out_of_window_prompts_and_counts_them(trainer, tmp_path):
    import json

    low, high = _window_around_median(_all_predictions(trainer))
    _set_filter(trainer, low=low, high=high, warmup_steps=0, explore_rate=0.5, max_scan=10_000, seed=1)
    log = tmp_path / "admissions.jsonl"
    trainer.depo = dataclasses.replace(trainer.depo, admissions_log=str(log))
    explored = 0
    for step in range(1, 6):
        trainer.global_steps = step
        trainer._step_prompts, trainer._intake = {}, type(trainer._intake)()
        assert trainer._next_train_batch().batch_size[0] == BATCH
        for _, a in trainer._step_prompts.values():
            inside = low <= a.prediction <= high
            assert inside == (a.reason == "window")
            explored += a.reason == "explore"
        assert trainer._intake_metrics()["depo/kept_explore"] == sum(
            a.reason == "explore" for _, a in trainer._step_prompts.values()
        )
    trainer.depo = dataclasses.replace(trainer.depo, admissions_log=None)
    assert explored > 0
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert sum(x["decision"] == "explore" for x in lines) == explored
    for x in lines:
        if x["decision"] != "carried":  # carried: kept beyond the batch, by window or exploration
            assert (low <= x["prediction"] <= high) == (x["decision"] == "window"), x


def test_scan_cap_fills_the_batch_and_says_so(trainer):
    _set_filter(trainer, low=0.999, high=1.0, warmup_steps=0, max_scan=BATCH)
    trainer.global_steps = 7
    trainer._step_prompts, trainer._intake = {}, type(trainer._intake)()
    assert trainer._next_train_batch().batch_size[0] == BATCH
    assert [a.reason for _, a in trainer._step_prompts.values()] == ["fill"] * BATCH
    m = trainer._intake_metrics()
    assert m["depo/scan_cap_hit"] == 1.0 and m["depo/kept_fill"] == BATCH
    # a refill request of any size (the replay buffer's refill_fn) is honoured exactly
    assert trainer._next_train_batch(1).batch_size[0] == 1


# ----------------------------------------------------------------------------- TransferQueue side
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


def test_labels_by_uid_from_a_shuffled_rollout_update_the_estimator(trainer):
    _set_filter(trainer, low=0.0, high=1.0, warmup_steps=0, max_scan=64)
    trainer.global_steps = 9
    trainer._step_prompts, trainer._intake = {}, type(trainer._intake)()
    uids = trainer._next_train_batch().get("uid").tolist()
    acc = {uids[0]: [1, 1], uids[1]: [0, 0], uids[2]: [1, 0], uids[3]: [0, 1]}
    meta = _rollout_into_tq(trainer, acc, acc, {u: [3, 2] for u in uids}, padding_uid=uids[0])
    calls = []
    real_call = trainer._estimator_call

    def spy(method, *args):
        if method == "update":
            calls.append(args)
        return real_call(method, *args)

    trainer._estimator_call = spy
    try:
        before = real_call("describe")["num_updates"]
        metrics = trainer._update_estimator(meta)
    finally:
        del trainer._estimator_call
        _clear(meta)
    texts, mean_k, avg_lp = calls[0]
    expected = {trainer._step_prompts[u][0]: np.mean(acc[u]) for u in uids}  # padding row excluded
    assert dict(zip(texts, mean_k.tolist())) == pytest.approx(expected)
    np.testing.assert_allclose(avg_lp, -0.5)
    assert metrics["depo/target_mean"] == pytest.approx(0.5)
    assert metrics["depo/distill_target_mean"] == pytest.approx(np.exp(-0.5), rel=1e-6)
    assert metrics["depo/estimator/num_updates"] == before + 1
    assert real_call("describe")["num_updates"] == before + 1
    for key in ("depo/calib_mae", "depo/spearman", "depo/estimator/loss", "depo/estimator/ranking_loss"):
        assert key in metrics


def test_missing_correctness_key_stops_naming_the_setting(trainer):
    trainer.global_steps = 10
    trainer._step_prompts, trainer._intake = {}, type(trainer._intake)()
    uids = trainer._next_train_batch().get("uid").tolist()
    acc = {u: [1, 0] for u in uids}
    meta = _rollout_into_tq(trainer, acc, acc, {u: [2, 2] for u in uids})
    trainer.depo = dataclasses.replace(trainer.depo, acc_key="is_correct")
    try:
        with pytest.raises(LabelError, match=r"depo\.labels\.acc_key"):
            trainer._update_estimator(meta)
    finally:
        trainer.depo = dataclasses.replace(trainer.depo, acc_key="acc")
        _clear(meta)


def test_advantage_hook_flags_zero_adv_groups_and_masks_exactly(trainer):
    import transfer_queue as tq
    from verl.trainer.ppo import core_algos
    from verl.trainer.ppo.core_algos import agg_loss

    scores = {"mixed": [1.0, 0.0, 1.0], "allwrong": [0.0, 0.0, 0.0], "allright": [1.0, 1.0, 1.0]}
    lengths = {"mixed": [2, 3, 4], "allwrong": [3, 1, 2], "allright": [5, 2, 2]}
    meta = _rollout_into_tq(trainer, scores, scores, lengths, padding_uid="mixed", shuffle_seed=3)
    trainer.depo = dataclasses.replace(trainer.depo, mask_zero_adv_groups=True)
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
        trainer._restore_masks()
        data = tq.kv_batch_get(keys=real, partition_id="train", select_fields=["response_mask", "loss_mask"])
        for i in range(len(real)):
            assert int(data["response_mask"][i].sum()) == len(data["response_mask"][i])
            assert int(data["loss_mask"][i].sum()) == len(data["loss_mask"][i])
    finally:
        trainer.depo = dataclasses.replace(trainer.depo, mask_zero_adv_groups=False)
        _clear(meta)


def test_all_zero_adv_batch_is_not_masked_into_a_zero_denominator(trainer):
    scores = {"a": [1.0, 1.0], "b": [0.0, 0.0]}
    meta = _rollout_into_tq(trainer, scores, scores, {"a": [2, 2], "b": [2, 2]})
    trainer.depo = dataclasses.replace(trainer.depo, mask_zero_adv_groups=True)
    try:
        metrics = {}
        trainer._compute_advantage(meta, metrics)
        assert metrics["depo/zero_adv_group_frac"] == 1.0 and metrics["depo/masked_groups"] == 0
        assert trainer._masked == []
    finally:
        trainer.depo = dataclasses.replace(trainer.depo, mask_zero_adv_groups=False)
        _clear(meta)


# ----------------------------------------------------------------------------- checkpoints
class _NoActor:
    """verl's save/load call the actor group; there is none here."""

    def save_checkpoint(self, *args, **kwargs):
        return None

    def load_checkpoint(self, *args, **kwargs):
        return None


def test_checkpoint_round_trip_restores_estimator_and_filter(env, trainer, tmp_path):
    low, high = _window_around_median(_all_predictions(trainer))
    _set_filter(trainer, low=low, high=high, warmup_steps=0, explore_rate=0.3, max_scan=10_000, seed=5)
    trainer.config.trainer.default_local_dir = str(tmp_path / "ckpt")
    trainer.actor_rollout_wg = _NoActor()
    trainer.global_steps = 11
    trainer._step_prompts, trainer._intake = {}, type(trainer._intake)()
    trainer._next_train_batch()
    trainer._estimator_call("update", ["1 + 1", "9999 + 8888 + 7777"], [1.0, 0.0], [-0.1, -2.0])
    while not trainer.depo_filter.carry:  # make sure there is carry-over to restore
        trainer._next_train_batch(1)
    trainer._save_checkpoint()
    step_dir = tmp_path / "ckpt" / "global_step_11"
    assert (step_dir / "depo" / "state.json").is_file() and (step_dir / "depo" / "estimator").is_dir()
    assert (tmp_path / "ckpt" / "latest_checkpointed_iteration.txt").read_text() == "11"

    resumed = _build(env, trainer__default_local_dir=str(tmp_path / "ckpt"), trainer__resume_mode="auto")
    resumed.depo_filter = DifficultyFilter(trainer.depo_filter.config)
    resumed.actor_rollout_wg = _NoActor()
    resumed._load_checkpoint()
    assert resumed.global_steps == 11
    resumed.on_init_end = None  # verl's part (weight sync) needs the rollout; start ours directly
    resumed._init_estimator_worker(checkpoint=os.path.join(resumed._depo_resume_dir, "estimator"))
    resumed._load_filter_state(resumed._depo_resume_dir)
    try:
        assert resumed.depo_filter.state_dict() == trainer.depo_filter.state_dict()
        assert set(resumed._carry_rows) == set(trainer._carry_rows)
        probe = [text for _, text in trainer._carry_rows.values()] + ["12 + 30"]
        np.testing.assert_array_equal(_predict(resumed, probe), _predict(trainer, probe))
        assert resumed._estimator_call("describe")["num_updates"] == trainer._estimator_call("describe")["num_updates"]
        # both continue identically: same prompts (dataloader state came from data.pt), same decisions
        for t in (trainer, resumed):
            t.global_steps = 12
            t._step_prompts, t._intake = {}, type(t._intake)()
        a, b = trainer._next_train_batch(), resumed._next_train_batch()
        assert _texts(a) == _texts(b)
        assert [x.reason for _, x in trainer._step_prompts.values()] == [
            x.reason for _, x in resumed._step_prompts.values()
        ]
    finally:
        ray.kill(resumed.estimator_wg.workers[0])


def test_checkpoint_is_complete_or_absent(env, trainer, tmp_path):
    trainer.config.trainer.default_local_dir = str(tmp_path / "ckpt")
    trainer.actor_rollout_wg = _NoActor()
    trainer.global_steps = 13
    real_call = trainer._estimator_call

    def failing(method, *args):
        if method == "save_checkpoint":
            raise OSError("disk full")
        return real_call(method, *args)

    trainer._estimator_call = failing
    try:
        with pytest.raises(OSError):
            trainer._save_checkpoint()
    finally:
        del trainer._estimator_call
    step_dir = tmp_path / "ckpt" / "global_step_13"
    assert not (step_dir / "depo").exists()
    assert not [p for p in step_dir.iterdir() if p.name.startswith(".depo")]
    assert not (tmp_path / "ckpt" / "latest_checkpointed_iteration.txt").exists()


def test_resuming_a_checkpoint_without_depo_state_is_refused(env, tmp_path):
    ckpt = tmp_path / "ckpt"
    (ckpt / "global_step_3").mkdir(parents=True)
    (ckpt / "latest_checkpointed_iteration.txt").write_text("3")
    t = _build(env, trainer__default_local_dir=str(ckpt), trainer__resume_mode="auto")
    t.actor_rollout_wg = _NoActor()
    with pytest.raises(RuntimeError, match=r"depo\.checkpoint\.require_state"):
        t._load_checkpoint()
    t = _build(
        env, trainer__default_local_dir=str(ckpt), trainer__resume_mode="auto", depo__checkpoint__require_state=False
    )
    t.actor_rollout_wg = _NoActor()
    t._load_checkpoint()
    assert t.global_steps == 3 and t._depo_resume_dir is None


def test_depo_off_is_plain_verl_intake(env):
    for values in ({"depo__enable": False}, {"depo__filter__enable": False}):
        t = _build(env, **values)
        assert t.depo_filter is None and not t.depo.uses_estimator
        t._step_prompts, t._intake = {}, type(t._intake)()
        # verl's own intake: whole gen_batch_size (3) fetches only
        with pytest.raises(ValueError, match="multiple of gen_batch_size"):
            t._next_train_batch(4)
        assert t._next_train_batch(3).batch_size[0] == 3 and t.estimator_wg is None
        assert t._step_prompts == {}
