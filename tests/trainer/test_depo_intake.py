"""PromptIntake on verl's real dataloader batches (``PPOTrainerSync._fetch_one_gen_batch`` over a
parquet written here), with a deterministic scorer in place of the estimator worker (the worker
itself is exercised in tests/estimator and, through the trainer, in test_depo_trainer.py)."""

import json

import numpy as np
import pytest
import torch
from depo_helpers import BATCH, config_with, with_dataloader
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.utils import tensordict_utils as tu

from recipe.depo.filter import FilterConfig
from recipe.depo.intake import PromptIntake
from recipe.depo.prompt_text import prompt_text


class Scorer:
    """Longer sums are predicted harder; records every text it was asked about."""

    def __init__(self):
        self.seen = []

    def __call__(self, texts):
        self.seen += texts
        return np.clip(1.2 - np.array([len(t) for t in texts]) / 25.0, 0.0, 1.0)


@pytest.fixture()
def fetch(depo_env):
    trainer = with_dataloader(PPOTrainerSync(config_with(depo_env, depo__enable=False)), depo_env)
    return trainer._fetch_one_gen_batch


def make(log=None, **filter_values):
    values = dict(window=(0.15, 0.85), warmup_steps=1, max_scan=64)
    values.update(filter_values)
    return PromptIntake(FilterConfig(**values), text_source="auto", rollouts_per_prompt=2, admissions_log=log)


def texts_of(batch):
    return [prompt_text(p, e) for p, e in zip(tu.get(batch, "raw_prompt"), tu.get(batch, "extra_info"))]


def test_warmup_keeps_every_drawn_prompt_and_carries_the_surplus_rows(fetch):
    intake, score = make(), Scorer()
    batch = intake.next_batch(BATCH, 1, fetch, score)
    assert batch.batch_size[0] == BATCH and len(set(tu.get(batch, "uid"))) == BATCH
    assert [s.reason for s in intake.submitted.values()] == ["warmup"] * BATCH
    # gen_batch_size=3: two fetches for 4 prompts; the 2 surplus rows ride in the filter's queue
    carry = intake.filter.carry
    assert len(score.seen) == 6 and len(carry) == 2
    assert [tu.get(a.payload, "uid")[0] for a in carry] == [a.key for a in carry]
    # the scorer read the bare problem (not the template); the stored prediction is its own
    texts = texts_of(batch)
    assert [s.text for s in intake.submitted.values()] == texts == score.seen[:BATCH]
    assert all("+" in t and "What is" not in t and "boxed" not in t for t in texts)
    np.testing.assert_allclose([s.prediction for s in intake.submitted.values()], Scorer()(texts))
    m = intake.step_metrics(1, dataset_size=96)
    assert m["depo/warmup_active"] == 1.0 and m["depo/survival_rate"] == 1.0 and m["depo/kept_warmup"] == BATCH
    assert m["depo/prompts_scanned"] == 6 and m["depo/carry_over"] == 2
    # Over all 6 scanned prompts, kept or carried: the warm-up hides nothing of what is predicted.
    scanned = Scorer()(score.seen)
    assert m["depo/scanned_pred_mean"] == pytest.approx(scanned.mean())
    assert m["depo/scanned_pred_std"] == pytest.approx(scanned.std())
    assert m["depo/scanned_in_window"] == pytest.approx(np.mean((scanned >= 0.15) & (scanned <= 0.85)))
    assert m["depo/prompts_scanned_total"] == 6 and m["depo/dataset_passes"] == pytest.approx(6 / 96)


def test_after_warmup_only_window_prompts_and_carried_ones_first(fetch):
    intake, score = make(window=(0.3, 0.7), max_scan=10_000), Scorer()
    carried_before = None
    for step in (2, 3, 4):
        intake.begin_step()
        batch = intake.next_batch(BATCH, step, fetch, score)
        predictions = Scorer()(texts_of(batch))
        assert np.all((predictions >= 0.3) & (predictions <= 0.7)), predictions
        assert [s.reason for s in intake.submitted.values()] == ["window"] * BATCH
        uids = tu.get(batch, "uid")
        if carried_before:
            assert uids[: len(carried_before)] == carried_before[:BATCH]
        carried_before = [a.key for a in intake.filter.carry]
        m = intake.step_metrics(step)
        assert m["depo/warmup_active"] == 0.0 and m["depo/prompts_kept"] == BATCH
        assert 0.0 <= m["depo/survival_rate"] <= 1.0
    rejected = intake.filter.counters["rejected"]
    assert rejected > 0 and intake.step_metrics(4)["depo/rollouts_saved"] == 2 * rejected
    # Cumulative over the calls, unlike the per-step scan count.
    assert intake.step_metrics(4)["depo/prompts_scanned_total"] == len(score.seen) > m["depo/prompts_scanned"]


def test_exploration_is_counted_and_logged(fetch, tmp_path):
    log = tmp_path / "admissions.jsonl"
    intake, low, high = make(log=str(log), window=(0.3, 0.7), warmup_steps=0, explore_rate=0.5, seed=1), 0.3, 0.7
    explored = 0
    for step in range(1, 6):
        intake.begin_step()
        intake.next_batch(BATCH, step, fetch, Scorer())
        for s in intake.submitted.values():
            assert (low <= s.prediction <= high) == (s.reason == "window")
            explored += s.reason == "explore"
        kept_explore = sum(s.reason == "explore" for s in intake.submitted.values())
        assert intake.step_metrics(step)["depo/kept_explore"] == kept_explore
    assert explored > 0
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert sum(x["decision"] == "explore" for x in lines) == explored
    for x in lines:
        if x["decision"] != "carried":  # carried: kept beyond the batch, by window or exploration
            assert (low <= x["prediction"] <= high) == (x["decision"] == "window"), x


def test_scan_cap_fills_the_batch_and_any_refill_size_is_honoured(fetch):
    intake = make(window=(0.999, 1.0), warmup_steps=0, max_scan=BATCH)
    assert intake.next_batch(BATCH, 7, fetch, Scorer()).batch_size[0] == BATCH
    assert [s.reason for s in intake.submitted.values()] == ["fill"] * BATCH
    m = intake.step_metrics(7)
    assert m["depo/scan_cap_hit"] == 1.0 and m["depo/kept_fill"] == BATCH
    assert intake.next_batch(1, 7, fetch, Scorer()).batch_size[0] == 1  # the replay buffer's refill_fn
    assert intake.step_metrics(7)["depo/generation_rounds"] == 2  # verl's dynamic-sampling refill counts


def test_state_and_carried_rows_round_trip_through_torch_save(fetch, tmp_path):
    intake = make(window=(0.3, 0.7), warmup_steps=0, explore_rate=0.3, max_scan=10_000, seed=5)
    while not intake.filter.carry:
        intake.next_batch(1, 2, fetch, Scorer())
    torch.save(intake.carried_rows(), tmp_path / "rows.pt")
    state = json.loads(json.dumps(intake.state_dict()))
    resumed = make(window=(0.3, 0.7), warmup_steps=0, explore_rate=0.3, max_scan=10_000, seed=5)
    resumed.load_state_dict(state, torch.load(tmp_path / "rows.pt", weights_only=False))
    assert resumed.filter.state_dict() == intake.filter.state_dict()
    carried = [a.key for a in intake.filter.carry]
    # both decide alike from here: the carried rows come out first, identical, then the same fresh draws
    rows = [tu.index_select_tensor_dict(fetch(), [i]) for i in range(3)]
    replay = iter(rows * 2)

    def one_row():
        return next(replay)

    a = intake.next_batch(len(carried) + 1, 3, one_row, Scorer())
    replay = iter(rows * 2)
    b = resumed.next_batch(len(carried) + 1, 3, one_row, Scorer())
    assert tu.get(a, "uid") == tu.get(b, "uid") and tu.get(a, "uid")[: len(carried)] == carried
    assert texts_of(a) == texts_of(b)
