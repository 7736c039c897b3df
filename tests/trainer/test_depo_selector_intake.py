"""Every selector of ``depo.filter.selector`` through the real intake (verl's dataloader batches, as
in test_depo_intake.py): history-only selectors draw without an estimator, learn by prompt (not by
verl's per-draw uid), and a checkpoint's state and carried rows give the next step's selection
exactly."""

import json

import numpy as np
import pytest
import torch
from depo_helpers import BATCH, config_with, with_dataloader
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.utils import tensordict_utils as tu

from recipe.depo.filter import FilterConfig
from recipe.depo.intake import PromptIntake, prompt_id
from recipe.depo.prompt_text import prompt_text

N = 2


@pytest.fixture()
def fetch(depo_env):
    trainer = with_dataloader(PPOTrainerSync(config_with(depo_env, depo__enable=False)), depo_env)
    return trainer._fetch_one_gen_batch


def make(selector, **filter_values):
    values = dict(window=(0.15, 0.85), warmup_steps=0, max_scan=12, explore_rate=0.25, seed=3, selector=selector)
    values.update(filter_values)
    return PromptIntake(FilterConfig(**values), text_source="auto", rollouts_per_prompt=N)


def texts_of(batch):
    return [prompt_text(p, e) for p, e in zip(tu.get(batch, "raw_prompt"), tu.get(batch, "extra_info"))]


def outcome(text):
    """A fixed mean@k per problem: short sums all right, long ones all wrong, the rest half."""
    return 1.0 if len(text) < 9 else 0.0 if len(text) > 16 else 0.5


def predict(texts):
    return np.clip(1.2 - np.array([len(t) for t in texts]) / 25.0, 0.0, 1.0)


def one_step(intake, step, fetch, score):
    intake.begin_step()
    batch = intake.next_batch(BATCH, step, fetch, score)
    uids = [str(u) for u in tu.get(batch, "uid")]
    metrics = intake.learn(uids, [outcome(t) for t in texts_of(batch)])
    return uids, texts_of(batch), metrics


def test_greso_skips_a_prompt_by_its_own_history_without_an_estimator(fetch):
    # p fixed at 0: a prompt whose last group had zero variance is skipped with probability 1 - 0^z = 1
    greso = {"p_easy": 0.0, "p_hard": 0.0, "p_min": 0.0, "p_max": 0.0}
    intake = make({"name": "greso", "greso": greso}, explore_rate=0.0, max_scan=10_000)
    assert not intake.filter.config.needs_estimator
    seen: dict[str, float] = {}
    skipped = 0
    for step in range(1, 60):
        intake.begin_step()
        batch = intake.next_batch(BATCH, step, fetch, None)  # no scorer at all
        texts = texts_of(batch)
        # nothing rolled out again once one of its groups had zero variance
        assert all(seen.get(prompt_id(t), 0.5) == 0.5 for t in texts), step
        metrics = intake.learn([str(u) for u in tu.get(batch, "uid")], [outcome(t) for t in texts])
        seen.update({prompt_id(t): outcome(t) for t in texts})
        skipped_now = intake.filter.selector.counters["skipped"] - skipped
        skipped = intake.filter.selector.counters["skipped"]
        assert metrics["depo/selector/tracked_prompts"] == len(seen)
        m = intake.step_metrics(step, dataset_size=96)
        assert m["depo/prompts_kept"] == BATCH and m["depo/estimator/predict_time_s"] == 0.0
        # survival counts GRESO's decisions, not its score (a prompt's last mean@k) against the window
        assert m["depo/survival_rate"] == (m["depo/prompts_scanned"] - skipped_now) / m["depo/prompts_scanned"]
    # the pool came round again (96 rows): zero-variance prompts were met and skipped, by prompt text
    assert intake.filter.counters["scanned"] > 96 and skipped > 0
    assert skipped == intake.filter.counters["rejected"]


def test_survival_counts_the_selectors_decisions_not_its_score_against_the_window(fetch):
    # p = 0.5: a prompt with a zero-variance history is rolled out half the time, though its score
    # (its last mean@k, 0 or 1) lies outside the window
    greso = {"p_easy": 0.5, "p_hard": 0.5, "p_min": 0.5, "p_max": 0.5}
    intake = make({"name": "greso", "greso": greso}, explore_rate=0.0, max_scan=10_000)
    kept_out_of_window = 0
    for step in range(1, 60):
        skipped = intake.filter.selector.counters["skipped"]
        _, texts, _ = one_step(intake, step, fetch, None)
        m = intake.step_metrics(step)
        skipped_now = intake.filter.selector.counters["skipped"] - skipped
        assert m["depo/survival_rate"] == (m["depo/prompts_scanned"] - skipped_now) / m["depo/prompts_scanned"]
        kept_out_of_window += sum(not 0.15 <= p <= 0.85 for p in intake._step.scanned_predictions)
    assert kept_out_of_window > 0 and intake.filter.selector.counters["skipped"] > 0


@pytest.mark.parametrize("name", ["depo", "greso", "posterior", "hybrid"])
def test_checkpoint_state_gives_the_next_steps_selection_exactly(fetch, tmp_path, name):
    selector = {"name": name, "greso": {"p_easy": 0.3, "p_hard": 0.3}, "hybrid": {"decision": "thompson"}}
    intake = make(selector)
    score = predict if intake.filter.config.needs_estimator else None
    for step in range(1, 40):
        one_step(intake, step, fetch, score)
    torch.save(intake.carried_rows(), tmp_path / "rows.pt")
    state = json.loads(json.dumps(intake.state_dict()))  # what checkpoint.save writes
    assert state["filter"]["selector"]["selector"] == name
    resumed = make(selector)
    resumed.load_state_dict(state, torch.load(tmp_path / "rows.pt", weights_only=False))
    assert resumed.filter.state_dict() == intake.filter.state_dict()
    assert resumed.audit.state_dict() == intake.audit.state_dict()
    # both draw the same rows from here (verl's dataloader state is verl's to restore)
    rows = [tu.index_select_tensor_dict(fetch(), [i]) for _ in range(12) for i in range(3)]
    runs = []
    for run in (intake, resumed):
        replay = iter(rows).__next__
        runs.append([one_step(run, step, replay, score) for step in (40, 41, 42)])
    assert json.dumps(runs[0]) == json.dumps(runs[1])  # metrics included (NaN compares as text)
    assert intake.filter.state_dict() == resumed.filter.state_dict()
    assert intake.audit.state_dict() == resumed.audit.state_dict()


def test_a_saved_state_of_another_selector_starts_the_new_one_fresh(fetch):
    greso = make({"name": "greso"})
    for step in (1, 2, 3):
        one_step(greso, step, fetch, None)
    assert greso.filter.selector.history
    posterior = make({"name": "posterior"})
    posterior.load_state_dict(greso.state_dict(), greso.carried_rows())
    assert posterior.filter.selector.name == "posterior" and posterior.filter.selector.counts == {}
    assert [a.key for a in posterior.filter.carry] == [a.key for a in greso.filter.carry]


def test_dynamic_sampling_refills_go_through_the_same_selector(fetch):
    # verl's replay buffer asks the intake for a few prompts more when groups were evicted
    intake = make({"name": "posterior", "posterior": {"decision": "mean"}}, explore_rate=0.0, window=(0.4, 0.6))
    intake.begin_step()
    intake.next_batch(BATCH, 1, fetch, None)
    decided = intake.filter.selector.counters["decided"]
    refill = intake.next_batch(5, 1, fetch, None)  # more than the carry-over holds: fresh draws decided
    assert refill.batch_size[0] == 5 and intake.filter.selector.counters["decided"] > decided
    assert len(intake.submitted) == BATCH + 5 and intake.step_metrics(1)["depo/generation_rounds"] == 2
