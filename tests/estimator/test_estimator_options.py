"""The estimator's options beyond the paper: replay, several steps per call, calibration, the
authors' ranking weighting and head, and resuming a checkpoint with changed settings."""

import json
import os

import numpy as np
import pytest
import torch
from estimator_helpers import LOGPROB, MEAN_K, PROMPTS, assert_same_params, make, params

from recipe.depo.estimator import (
    EstimatorConfig,
    OnlineEstimator,
    apply_calibration,
    fit_calibration,
    resume_changes,
)
from recipe.depo.estimator.losses import ranking_pair_mask

OTHER = ["Find x if x + 4 = 9.", "What is 2 ** 10?", "Compute 17 * 23.", "Is 91 prime?"]
OTHER_K = np.array([0.75, 0.5, 0.25, 0.0], dtype=np.float32)
OTHER_LP = np.array([-0.3, -0.5, -0.8, -1.5], dtype=np.float32)


# ----------------------------------------------------------------------------- config
def test_paper_preset_is_the_authors_estimator_and_the_defaults_differ_only_where_measured():
    paper = EstimatorConfig.paper()
    assert (paper.lr, paper.updates_per_step, paper.replay_steps, paper.calibration) == (2e-4, 1, 1, "none")
    assert paper.head == "mlp" and paper.ranking_divide_by_micro_batches is False
    shipped = EstimatorConfig()
    differ = {k for k, v in paper.to_dict().items() if shipped.to_dict()[k] != v}
    assert differ == {"lr", "updates_per_step", "calibration"}
    assert EstimatorConfig.paper(lr=5e-4).lr == 5e-4


@pytest.mark.parametrize(
    "field,value",
    [
        ("head", "wide"),
        ("calibration", "platt"),
        ("updates_per_step", 0),
        ("replay_steps", 0),
        ("calibration_steps", 0),
        ("calibration_prior", 0.0),
        ("residual_width", -1),
        ("ranking_divide_by_micro_batches", "yes"),
    ],
)
def test_invalid_new_fields_are_named(field, value):
    with pytest.raises(ValueError, match=field):
        EstimatorConfig(**{field: value})


# ----------------------------------------------------------------------------- replay
def test_replay_keeps_the_latest_calls_and_trains_on_them(tiny_encoder):
    est = make(tiny_encoder, replay_steps=2, updates_per_step=3)
    m1 = est.update(PROMPTS, MEAN_K, LOGPROB)
    assert (m1["replay_prompts"], m1["optimizer_steps"]) == (8.0, 3.0)
    m2 = est.update(OTHER, OTHER_K, None)
    # This call's 4 prompts plus the previous call's 8; ranking pairs only within each call.
    assert m2["replay_prompts"] == 12.0
    expected_pairs = int(ranking_pair_mask(torch.from_numpy(MEAN_K), 0.05).sum()) + int(
        ranking_pair_mask(torch.from_numpy(OTHER_K), 0.05).sum()
    )
    assert m2["num_pairs"] == float(expected_pairs)
    est.update(PROMPTS[:2], MEAN_K[:2], LOGPROB[:2])
    history = list(est._history)
    assert [h.prompts for h in history] == [OTHER, PROMPTS[:2]]
    assert history[0].logprob is None and np.array_equal(history[1].mean_k, MEAN_K[:2])
    assert (est.num_updates, est.num_optimizer_steps) == (3, 9)


def test_several_steps_per_call_equal_repeated_calls(tiny_encoder):
    # One call with 3 steps over its own labels = 3 paper calls with the same labels: same RNG
    # stream, same batches, so the same weights bit for bit.
    multi = make(tiny_encoder, updates_per_step=3)
    single = make(tiny_encoder)
    multi.update(PROMPTS, MEAN_K, LOGPROB)
    for _ in range(3):
        single.update(PROMPTS, MEAN_K, LOGPROB)
    assert_same_params(params(multi), params(single))
    assert multi.num_optimizer_steps == 3 and multi.num_updates == 1


def test_ranking_pairs_within_groups_by_hand():
    labels = torch.tensor([1.0, 0.0, 0.5, 0.0])
    groups = torch.tensor([0, 0, 1, 1])
    mask = ranking_pair_mask(labels, 0.05, groups)
    # Across groups (1.0 vs 0.5, 1.0 vs 0.0 of group 1, 0.5 vs 0.0 of group 0) no pair counts.
    assert mask.nonzero().tolist() == [[0, 1], [2, 3]]


# ----------------------------------------------------------------------------- ranking weighting
def test_divide_by_micro_batches_is_the_ranking_weight_over_their_number(tiny_encoder_nodrop):
    # 8 prompts in micro-batches of 3 = 3 micro-batches: w_ranking 3.0 divided = 1.0 undivided.
    divided = make(tiny_encoder_nodrop, w_ranking=3.0, ranking_divide_by_micro_batches=True)
    literal = make(tiny_encoder_nodrop, w_ranking=1.0)
    m_div = divided.update(PROMPTS, MEAN_K, LOGPROB)
    m_lit = literal.update(PROMPTS, MEAN_K, LOGPROB)
    assert m_div["loss"] == pytest.approx(m_lit["loss"], abs=1e-6)
    assert_same_params(params(divided), params(literal), atol=1e-6)


# ----------------------------------------------------------------------------- head
def test_residual_head_shapes_and_uninformed_start(tiny_encoder):
    est = make(tiny_encoder, head="residual", residual_width=24, residual_bottleneck=8, residual_blocks=2)
    shapes = {k: tuple(v.shape) for k, v in est.model.head_state_dict().items()}
    hidden = est.model.backbone.config.hidden_size
    assert shapes["trunk.1.weight"] == (24, hidden)
    for block in (4, 5):
        assert shapes[f"trunk.{block}.down.weight"] == (8, 24)
        assert shapes[f"trunk.{block}.up.weight"] == (24, 8)
        assert shapes[f"trunk.{block}.norm.weight"] == (24,)
    assert shapes["trunk.6.weight"] == (24,)  # final LayerNorm
    assert shapes["score_head.weight"] == (1, 24) and shapes["distill_head.weight"] == (1, 24)
    assert np.all(est.predict(PROMPTS) == 0.5)
    assert est.update(PROMPTS, MEAN_K, LOGPROB)["skipped"] == 0.0
    assert not np.all(est.predict(PROMPTS) == 0.5)


def test_mlp_head_is_unchanged_by_the_option(tiny_encoder):
    est = make(tiny_encoder, hidden_dims=(16, 8))
    shapes = {k: tuple(v.shape) for k, v in est.model.head_state_dict().items()}
    assert shapes["trunk.1.weight"][0] == 16 and shapes["trunk.4.weight"] == (8, 16)
    assert shapes["score_head.weight"] == (1, 8)


# ----------------------------------------------------------------------------- calibration
@pytest.mark.parametrize("mode", ["bias", "affine"])
def test_calibration_is_refit_on_the_latest_calls_after_the_update(tiny_encoder, mode):
    est = make(tiny_encoder, calibration=mode, calibration_steps=2, calibration_prior=2.0)
    m = est.update(PROMPTS, MEAN_K, LOGPROB)
    # The first call's metrics judge the predictions the filter used: the identity map then.
    assert m["calib_mae"] >= 0 and (m["calib_a"], m["calib_b"]) == est.calibration
    est.update(OTHER, OTHER_K, OTHER_LP)
    both = PROMPTS + OTHER
    raw = est._predict_logits(both)
    expected = fit_calibration(raw, np.concatenate([MEAN_K, OTHER_K]), mode, 2.0)
    assert est.calibration == pytest.approx(expected, abs=1e-9)
    if mode == "bias":
        assert est.calibration[0] == 1.0
    np.testing.assert_allclose(est.predict(both), apply_calibration(raw, *est.calibration), atol=1e-6)


def test_calibration_follows_a_uniform_shift_at_once(tiny_encoder):
    # Labels far above every prediction: the bias alone moves the mean prediction to them
    # after one call, while the uncalibrated estimator (one AdamW step) barely moves.
    calibrated = make(tiny_encoder, calibration="bias", calibration_prior=0.01)
    plain = make(tiny_encoder)
    high = np.full(len(PROMPTS), 0.9, dtype=np.float32)
    calibrated.update(PROMPTS, high, LOGPROB)
    plain.update(PROMPTS, high, LOGPROB)
    assert abs(float(calibrated.predict(PROMPTS).mean()) - 0.9) < 0.02
    assert float(plain.predict(PROMPTS).mean()) < 0.6


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_with_replay_and_calibration(tiny_encoder, tmp_path):
    est = make(tiny_encoder, replay_steps=2, updates_per_step=2, calibration="affine", calibration_steps=3)
    est.update(PROMPTS, MEAN_K, LOGPROB)
    est.update(OTHER, OTHER_K, None)
    path = est.save(str(tmp_path / "ckpt"))
    with open(os.path.join(path, "replay.json")) as f:
        saved = json.load(f)["entries"]
    assert [e["prompts"] for e in saved] == [PROMPTS, OTHER] and saved[1]["avg_logprob"] is None
    loaded = OnlineEstimator.load(path)
    assert loaded.calibration == est.calibration and loaded.num_optimizer_steps == 4
    assert loaded.resumed_changes == []
    np.testing.assert_array_equal(loaded.predict(PROMPTS), est.predict(PROMPTS))
    m_direct = est.update(PROMPTS[:3], MEAN_K[:3], LOGPROB[:3])
    m_loaded = loaded.update(PROMPTS[:3], MEAN_K[:3], LOGPROB[:3])
    for key in ("loss", "grad_norm", "replay_prompts", "calib_a", "calib_b"):
        assert m_loaded[key] == m_direct[key], key
    assert_same_params(params(loaded), params(est))


def test_format_1_checkpoint_still_loads(tiny_encoder, tmp_path):
    est = make(tiny_encoder)
    est.update(PROMPTS, MEAN_K, LOGPROB)
    path = est.save(str(tmp_path / "ckpt"))
    os.remove(os.path.join(path, "replay.json"))
    with open(os.path.join(path, "state.json"), "w") as f:
        json.dump({"format_version": 1, "num_updates": 1, "num_skipped": 0}, f)
    loaded = OnlineEstimator.load(path)
    assert loaded.num_updates == 1 and loaded.num_optimizer_steps == 1
    assert list(loaded._history) == [] and loaded.calibration == (1.0, 0.0)


# ----------------------------------------------------------------------------- resume with new settings
def test_resume_applies_changed_settings_and_says_so(tiny_encoder, tmp_path, caplog):
    est = make(tiny_encoder)
    est.update(PROMPTS, MEAN_K, LOGPROB)
    path = est.save(str(tmp_path / "ckpt"))
    new = EstimatorConfig(**{**est.config.to_dict(), "lr": 1e-3, "w_ranking": 0.5, "weight_decay": 0.0, "seed": 7})
    with caplog.at_level("WARNING"):
        resumed = OnlineEstimator.load(path, config=new)
    assert resumed.config == new
    groups = resumed.optimizer.param_groups
    # The saved optimizer state must not bring the old lr / weight decay back.
    assert [g["lr"] for g in groups] == pytest.approx([1e-3 * 0.2, 1e-3])
    assert all(g["weight_decay"] == 0.0 for g in groups)
    changed = [line.split(":")[0] for line in resumed.resumed_changes]
    assert changed == ["lr", "seed", "w_ranking", "weight_decay"]
    assert "no effect" in resumed.resumed_changes[1]
    assert sum("lr: 0.0002 in the checkpoint, 0.001 now" in r.message for r in caplog.records) == 1


def test_resume_turning_calibration_on_fits_it_from_the_saved_labels(tiny_encoder, tmp_path):
    est = make(tiny_encoder)
    est.update(PROMPTS, MEAN_K, LOGPROB)
    path = est.save(str(tmp_path / "ckpt"))
    new = {**est.config.to_dict(), "calibration": "bias"}
    resumed = OnlineEstimator.load(path, config=new)
    expected = fit_calibration(resumed._predict_logits(PROMPTS), MEAN_K, "bias", 1.0)
    assert resumed.calibration == pytest.approx(expected) and resumed.calibration != (1.0, 0.0)


@pytest.mark.parametrize(
    "key,value",
    [
        ("pooling", "mean"),
        ("hidden_dims", [8]),
        ("head", "residual"),
        ("backbone", "other"),
        ("backbone_lr_scale", 0.0),
    ],
)
def test_resume_refuses_changes_the_weights_cannot_take(tiny_encoder, tmp_path, key, value):
    est = make(tiny_encoder)
    path = est.save(str(tmp_path / "ckpt"))
    with pytest.raises(ValueError, match=rf"^{key}: .* in the checkpoint"):
        OnlineEstimator.load(path, config={**est.config.to_dict(), key: value})


def test_resume_changes_by_hand():
    saved = {"lr": 2e-4, "hidden_dims": [256], "head": "mlp", "residual_width": 1024, "seed": 0}
    applied, refused = resume_changes(saved, {**saved, "residual_width": 512, "hidden_dims": (256,)})
    assert refused == [] and applied == ["residual_width: 1024 in the checkpoint, 512 now (unused by the mlp head)"]
    applied, refused = resume_changes(saved, {**saved, "hidden_dims": [128], "lr": 1e-3})
    assert applied == ["lr: 0.0002 in the checkpoint, 0.001 now (applied)"]
    assert len(refused) == 1 and refused[0].startswith("hidden_dims: [256] in the checkpoint, [128] now")


def test_affine_calibration_is_scale_free():
    # Logits in a narrow band (a young encoder that ranks well but has not learned the scale):
    # the map needs a slope of 2000, which a prior on a itself would forbid.
    u = np.linspace(-2, 2, 41)
    labels = 1 / (1 + np.exp(-(2 * u + 0.5)))
    a, b = fit_calibration(1e-3 * u, labels, "affine", prior=1e-9)
    assert a == pytest.approx(2000.0, rel=1e-5) and b == pytest.approx(0.5, abs=1e-5)
    # A strong prior keeps the identity (slope sd z in standardised units is a = 1).
    a, b = fit_calibration(1e-3 * u, labels, "affine", prior=1e9)
    assert a == pytest.approx(1.0, abs=1e-3) and b == pytest.approx(0.0, abs=1e-3)


@pytest.mark.parametrize(
    "damage,match",
    [
        (lambda d: os.remove(os.path.join(d, "replay.json")), "replay.json"),
        (
            lambda d: open(os.path.join(d, "replay.json"), "w").write('{"entries": [{"prompts": ["a"]}]}'),
            "label history",
        ),
        (lambda d: open(os.path.join(d, "replay.json"), "w").write("{trunc"), "replay.json"),
    ],
)
def test_damaged_label_history_is_named(tiny_encoder, tmp_path, damage, match):
    est = make(tiny_encoder, calibration="bias")
    est.update(PROMPTS, MEAN_K, LOGPROB)
    path = est.save(str(tmp_path / "ckpt"))
    damage(path)
    with pytest.raises(ValueError, match=match):
        OnlineEstimator.load(path)
