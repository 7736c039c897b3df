"""The scorer that checks itself (recipe/depo/audit.py): hand-computed calibration error, shadow
precision and recall, the live false-rejection rate, and the drift guard through the real intake
(verl's dataloader batches, a deterministic scorer in place of the estimator worker)."""

import math

import numpy as np
import pytest
from depo_helpers import BATCH, config_with, with_dataloader
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.utils import tensordict_utils as tu

from recipe.depo.audit import SelectionAudit, calibration_error, zero_advantage
from recipe.depo.filter import GUARD, WINDOW, FilterConfig
from recipe.depo.intake import PromptIntake


def test_calibration_error_is_the_binned_gap_weighted_by_bin_size():
    # bins 0, 1, 9: gaps 0.05, |0.15 - 0.5| = 0.35 and 0.05 -> mean 0.15
    assert calibration_error([0.05, 0.15, 0.95], [0.0, 0.5, 1.0]) == pytest.approx(0.15)
    # one bin: the gap of the means, not the mean of the gaps
    assert calibration_error([0.42, 0.48], [0.0, 1.0]) == pytest.approx(0.05)
    assert math.isnan(calibration_error([], []))


def test_zero_advantage_is_all_rollouts_alike():
    assert zero_advantage([0.0, 0.25, 1.0, 0.999], 4).tolist() == [True, False, True, True]


def test_shadow_precision_and_recall_per_step_and_over_the_run():
    audit = SelectionAudit()
    # zero advantage: groups 0 and 2; would reject 0 (right) and 1 (wrong), miss 2
    m = audit.shadow([True, True, False, False], [1.0, 0.5, 0.0, 0.5], n=2)
    assert (m["depo/shadow/precision"], m["depo/shadow/recall"], m["depo/shadow/would_reject"]) == (0.5, 0.5, 0.5)
    assert m["depo/shadow/rollouts_would_save"] == 4.0
    m = audit.shadow([True, False], [0.0, 0.5], n=2)  # one right rejection, nothing missed
    assert (m["depo/shadow/precision"], m["depo/shadow/recall"]) == (1.0, 1.0)
    assert m["depo/shadow/precision_total"] == pytest.approx(2 / 3) and m["depo/shadow/recall_total"] == 2 / 3
    m = audit.shadow([False], [0.5], n=2)
    assert math.isnan(m["depo/shadow/precision"]) and math.isnan(m["depo/shadow/recall"])


def test_false_rejection_rate_from_explored_groups_beside_the_kept_ones():
    audit = SelectionAudit()
    m = audit.rejections([True, True, False, False], [False, False, True, True], [0.5, 1.0, 0.25, 0.0], n=4)
    assert m["depo/audit/explored_groups"] == 2.0
    assert m["depo/audit/false_rejection_rate"] == 0.5 and m["depo/audit/kept_useful_rate"] == 0.5
    m = audit.rejections([True], [False], [0.75], n=4)
    assert m["depo/audit/false_rejection_rate"] == 1.0 and math.isnan(m["depo/audit/kept_useful_rate"])
    assert m["depo/audit/false_rejection_rate_total"] == pytest.approx(2 / 3)
    assert m["depo/audit/kept_useful_rate_total"] == 0.5


def test_guard_follows_the_error_over_its_last_steps_and_round_trips():
    audit = SelectionAudit(guard_threshold=0.2, guard_steps=2)
    audit.calibration([0.5, 0.5], [0.5, 0.5])
    assert not audit.guard_active
    m = audit.calibration([0.9, 0.9], [0.0, 0.0])  # the last two steps: error |0.7 - 0.25| = 0.45
    assert m["depo/calib_error"] == pytest.approx(0.9) and m["depo/calib_error_recent"] == pytest.approx(0.45)
    assert audit.guard_active
    restored = SelectionAudit(guard_threshold=0.2, guard_steps=2)
    restored.load_state_dict(audit.state_dict())
    assert restored.state_dict() == audit.state_dict()
    audit.calibration([0.1, 0.1], [0.0, 0.0])  # the bad step is still among the last two
    assert audit.guard_active
    audit.calibration([0.5, 0.5], [0.5, 0.5])
    assert not audit.guard_active
    off = SelectionAudit(guard_threshold=0.0)
    off.calibration([1.0], [0.0])
    assert not off.guard_active


@pytest.fixture()
def fetch(depo_env):
    trainer = with_dataloader(PPOTrainerSync(config_with(depo_env, depo__enable=False)), depo_env)
    return trainer._fetch_one_gen_batch


def constant(value):
    return lambda texts: np.full(len(texts), value)


def test_guard_rolls_out_everything_until_the_predictions_are_calibrated_again(fetch):
    config = FilterConfig(window=(0.4, 0.6), warmup_steps=0, max_scan=10_000, guard_threshold=0.3, guard_steps=1)
    intake = PromptIntake(config, text_source="auto", rollouts_per_prompt=2)

    def step(number, prediction, outcome):
        intake.begin_step()
        batch = intake.next_batch(BATCH, number, fetch, constant(prediction))
        reasons = [s.reason for s in intake.submitted.values()]
        m = intake.learn([str(u) for u in tu.get(batch, "uid")], [outcome] * BATCH)
        return reasons, m

    reasons, m = step(1, 0.5, 0.5)  # calibrated: the window decides
    assert reasons == [WINDOW] * BATCH and m["depo/guard_active"] == 0.0
    reasons, m = step(2, 0.5, 1.0)  # error 0.5 > 0.3: the guard is on from the next step
    assert reasons == [WINDOW] * BATCH and m["depo/guard_active"] == 0.0
    # predictions of 0.9 lie outside the window: without the guard nothing would be kept
    reasons, m = step(3, 0.9, 1.0)
    carried = intake.step_metrics(3)["depo/prompts_carried_in"]  # kept at step 2 (whole fetches of 3)
    assert reasons == [WINDOW] * carried + [GUARD] * (BATCH - carried) and BATCH - carried > 0
    assert m["depo/guard_active"] == 1.0 and m["depo/guard_steps_total"] == 1.0
    assert intake.step_metrics(3)["depo/kept_guard"] == BATCH - carried
    # error 0.1 at step 3 turned it off; what the guard carried over must now pass the window (0.9 does not)
    reasons, m = step(4, 0.5, 0.5)
    assert reasons == [WINDOW] * BATCH and m["depo/guard_active"] == 0.0


def test_shadow_mode_scores_verls_batch_without_touching_it(fetch, tmp_path):
    config = FilterConfig(window=(0.4, 0.6), warmup_steps=100, max_scan=64, mode="shadow")
    intake = PromptIntake(config, text_source="auto", rollouts_per_prompt=2, admissions_log=str(tmp_path / "a.jsonl"))
    with pytest.raises(RuntimeError, match="shadow"):
        intake.next_batch(BATCH, 1, fetch, constant(0.5))
    batch = fetch()
    before = list(tu.get(batch, "uid"))

    def score(texts):  # the first two in the window, the rest not
        return np.array([0.5, 0.5] + [0.9] * (len(texts) - 2))

    intake.begin_step()
    intake.shadow(batch, 1, score)  # warm-up (step 1 of 100) does not hide what it would reject
    uids = [str(u) for u in tu.get(batch, "uid")]
    assert uids == before and set(intake.submitted) == set(uids)
    assert [intake.would_reject[u] for u in uids] == [False, False] + [True] * (len(uids) - 2)
    outcomes = [0.5, 1.0] + [1.0] * (len(uids) - 2)  # every would-be rejection had zero advantage
    m = intake.learn(uids, outcomes)
    assert m["depo/shadow/precision"] == 1.0 and m["depo/shadow/recall"] == (len(uids) - 2) / (len(uids) - 1)
    assert "depo/audit/false_rejection_rate" not in m and "depo/guard_active" not in m
    sm = intake.step_metrics(1)
    assert sm["depo/prompts_kept"] == len(uids) and sm["depo/rollouts_saved"] == 0 and sm["depo/warmup_active"] == 0
    assert sm["depo/survival_rate"] == 2 / len(uids)
    log = (tmp_path / "a.jsonl").read_text().splitlines()
    assert len(log) == len(uids) and all('"mode": "shadow"' in line for line in log)
