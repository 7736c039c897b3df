"""OnlineEstimator: predict, update (exact micro-batching), skip on non-finite, checkpoints."""

import math
import os

import numpy as np
import pytest
import torch
from estimator_helpers import LOGPROB, MEAN_K, PROMPTS, assert_same_params, make, params

import recipe.depo.estimator.online as online_mod
from recipe.depo.estimator import OnlineEstimator, objective


# ----------------------------------------------------------------------------- predict
def test_first_predictions_are_one_half_float32_in_order(tiny_encoder):
    est = make(tiny_encoder)
    preds = est.predict(PROMPTS)
    assert preds.dtype == np.float32 and preds.shape == (len(PROMPTS),)
    assert np.all(preds == 0.5)


def test_predict_is_deterministic_order_preserving_and_batch_independent(tiny_encoder):
    est = make(tiny_encoder)
    est.update(PROMPTS, MEAN_K, LOGPROB)
    est.update(PROMPTS, MEAN_K, LOGPROB)
    preds = est.predict(PROMPTS)
    assert not np.all(preds == preds[0])  # it learned something prompt-dependent
    assert np.array_equal(preds, est.predict(PROMPTS))  # dropout off: deterministic
    np.testing.assert_allclose(est.predict(PROMPTS[::-1])[::-1], preds, atol=1e-6)
    one_by_one = np.array([est.predict([p])[0] for p in PROMPTS])
    np.testing.assert_allclose(one_by_one, preds, atol=1e-5)  # padding does not leak in
    assert np.all((preds >= 0) & (preds <= 1))


def test_truncation_to_max_length(tiny_encoder):
    est = make(tiny_encoder, max_length=8)
    assert est.max_length == 8
    long_prompt = "What is " + " + ".join(str(i) for i in range(500)) + "?"
    assert est.predict([long_prompt]).shape == (1,)
    assert est.update([long_prompt, "1"], [0.0, 1.0], [-1.0, -0.1])["skipped"] == 0.0


def test_estimator_rng_does_not_touch_global_rng(tiny_encoder):
    est = make(tiny_encoder)
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    est.update(PROMPTS, MEAN_K, LOGPROB)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_gpu_names_device(tiny_encoder):
    with pytest.raises(ValueError, match="device"):
        make(tiny_encoder, device="cuda")


def test_bfloat16_on_cpu_names_dtype(tiny_encoder):
    with pytest.raises(ValueError, match="dtype"):
        make(tiny_encoder, dtype="bfloat16", device="cpu")


# ----------------------------------------------------------------------------- update
def test_update_metrics_first_step(tiny_encoder):
    est = make(tiny_encoder)
    m = est.update(PROMPTS, MEAN_K, LOGPROB)
    expected = {
        "loss",
        "score_loss",
        "distill_loss",
        "ranking_loss",
        "calib_mae",
        "spearman",
        "grad_norm",
        "num_pairs",
        "skipped",
        "update_time_s",
        "num_updates",
    }
    assert expected <= m.keys()
    assert all(isinstance(v, float) for v in m.values())
    # zero heads: every logit is 0, so score/distill are ln 2 each and every hinge is the margin
    assert m["score_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert m["distill_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert m["ranking_loss"] == pytest.approx(0.5, abs=1e-6)
    assert m["loss"] == pytest.approx(math.log(2) * 1.5 + 3.0 * 0.5, abs=1e-5)
    assert m["calib_mae"] == pytest.approx(float(np.abs(0.5 - MEAN_K).mean()), abs=1e-6)
    assert m["spearman"] == 0.0  # constant predictions carry no ranking: reported as 0.0
    labels = MEAN_K.astype(np.float64)
    assert m["num_pairs"] == float(((labels[:, None] - labels[None, :]) > 0.05).sum())
    assert m["skipped"] == 0.0 and est.num_updates == 1 and m["grad_norm"] > 0


def test_update_changes_predictions_towards_labels(tiny_encoder):
    est = make(tiny_encoder, lr=3e-3)
    before = est.predict(PROMPTS)
    for _ in range(15):
        est.update(PROMPTS, MEAN_K, LOGPROB)
    after = est.predict(PROMPTS)
    assert np.abs(after - MEAN_K).mean() < np.abs(before - MEAN_K).mean()


def test_avg_logprob_none_turns_distill_off(tiny_encoder):
    est = make(tiny_encoder)
    m = est.update(PROMPTS, MEAN_K, None)
    assert m["distill_loss"] == 0.0
    assert m["loss"] == pytest.approx(math.log(2) + 3.0 * 0.5, abs=1e-5)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"w_ranking": 0.0},
        {"w_distill": 0.0},
        {"pooling": "mean"},
        {"replay_steps": 2, "updates_per_step": 2, "calibration": "affine"},
    ],
)
def test_micro_batching_equals_full_batch(tiny_encoder_nodrop, overrides):
    # Without dropout both schemes see the same forward; only the accumulation differs. The ranking
    # weight must not shrink with the number of micro-batches.
    small = make(tiny_encoder_nodrop, dropout=0.0, micro_batch_size=2, **overrides)
    full = make(tiny_encoder_nodrop, dropout=0.0, micro_batch_size=len(PROMPTS), **overrides)
    for step in range(2):
        m_small = small.update(PROMPTS, MEAN_K, LOGPROB)
        m_full = full.update(PROMPTS, MEAN_K, LOGPROB)
        for key in ("loss", "score_loss", "distill_loss", "ranking_loss", "grad_norm", "calib_mae"):
            assert m_small[key] == pytest.approx(m_full[key], abs=1e-5), (step, key)
        assert_same_params(params(small), params(full), atol=1e-6)


def _grads_captured_at_step(est):
    captured = {}
    original = est.optimizer.step

    def step(*args, **kwargs):
        for name, p in est.model.named_parameters():
            if p.grad is not None:
                captured[name] = p.grad.detach().clone()
        return original(*args, **kwargs)

    est.optimizer.step = step
    return captured


@pytest.mark.parametrize("micro_batch_size", [3, 8])
def test_two_pass_gradient_equals_single_graph_under_dropout(tiny_encoder, micro_batch_size):
    """With dropout on, the ranking gradient must be taken at the logits the backward pass sees.

    Reference: replay the same RNG stream, run every micro-batch forward *with* grad in one graph,
    compute the full-batch total loss and backprop once.
    """
    est = make(tiny_encoder, micro_batch_size=micro_batch_size, grad_clip=1e9, dropout=0.3)
    est.update(PROMPTS, MEAN_K, LOGPROB)  # move off the zero heads so every path has gradient
    cfg = est.config

    est.model.train()
    est.model.zero_grad(set_to_none=True)
    with torch.random.fork_rng(devices=[]):
        online_mod.OnlineEstimator._restore_rng(est, est._rng_state)
        batches = list(est._batches(est._tokenize(PROMPTS), cfg.micro_batch_size))
        score = torch.empty(len(PROMPTS))
        distill = torch.empty(len(PROMPTS))
        parts_s, parts_d, parts_i = [], [], []
        for idx, ids, mask in batches:
            s, d = est._forward(ids, mask)
            parts_s.append(s), parts_d.append(d), parts_i.append(idx)
        order = torch.cat(parts_i)
        score = torch.empty(len(PROMPTS)).index_put((order,), torch.cat(parts_s))
        distill = torch.empty(len(PROMPTS)).index_put((order,), torch.cat(parts_d))
        mean_k = torch.from_numpy(MEAN_K)
        ranking = online_mod.ranking_loss(score, mean_k, cfg.ranking_threshold, cfg.ranking_margin)
        ref = objective(
            online_mod.score_loss(score, mean_k),
            online_mod.distill_loss(distill, torch.from_numpy(LOGPROB)),
            ranking,
            w_distill=cfg.w_distill,
            w_ranking=cfg.w_ranking,
        )
        ref.backward()
    reference = {n: p.grad.detach().clone() for n, p in est.model.named_parameters() if p.grad is not None}
    est.model.zero_grad(set_to_none=True)

    captured = _grads_captured_at_step(est)
    m = est.update(PROMPTS, MEAN_K, LOGPROB)
    assert m["loss"] == pytest.approx(ref.item(), abs=1e-5)
    assert m["ranking_loss"] == pytest.approx(ranking.item(), abs=1e-6)
    assert captured.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(captured[name], reference[name], atol=1e-6, rtol=1e-5, msg=name)


# ----------------------------------------------------------------------------- non-finite
@pytest.mark.parametrize("target", ["score_loss", "ranking_loss"])
def test_non_finite_loss_skips_the_step(tiny_encoder, monkeypatch, target):
    est = make(tiny_encoder)
    est.update(PROMPTS, MEAN_K, LOGPROB)
    before = params(est)
    opt_before = {k: v.clone() for k, v in est.optimizer.state[next(iter(est.optimizer.state))].items()}
    real = getattr(online_mod, target)
    monkeypatch.setattr(online_mod, target, lambda *a, **k: real(*a, **k) * float("nan"))
    m = est.update(PROMPTS, MEAN_K, LOGPROB)
    assert m["skipped"] == 1.0
    assert math.isnan(m["loss"]) or math.isnan(m["grad_norm"])
    assert est.num_updates == 1 and est.num_skipped == 1
    assert_same_params(params(est), before)
    opt_after = est.optimizer.state[next(iter(est.optimizer.state))]
    assert all(torch.equal(opt_after[k], opt_before[k]) for k in opt_before)
    assert all(p.grad is None for p in est.model.parameters())
    monkeypatch.undo()
    m = est.update(PROMPTS, MEAN_K, LOGPROB)
    assert m["skipped"] == 0.0 and est.num_updates == 2
    assert all(torch.isfinite(v).all() for v in params(est).values())


def test_non_finite_gradient_skips_the_step(tiny_encoder, monkeypatch):
    est = make(tiny_encoder)
    before = params(est)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: torch.tensor(float("inf")))
    m = est.update(PROMPTS, MEAN_K, LOGPROB)
    assert m["skipped"] == 1.0 and est.num_updates == 0
    assert_same_params(params(est), before)


# ----------------------------------------------------------------------------- validation
GOOD = (PROMPTS[:3], [0.0, 0.5, 1.0], [-1.0, -0.5, 0.0])


@pytest.mark.parametrize(
    "args,name",
    [
        (([], [], []), "prompts"),
        (("just a string", [0.5], [-1.0]), "prompts"),
        (([PROMPTS[0], 3, PROMPTS[1]], [0.0, 0.5, 1.0], [-1.0, -1.0, -1.0]), "prompts"),
        ((PROMPTS[:3], [0.0, 0.5], [-1.0, -0.5, 0.0]), "mean_k"),
        ((PROMPTS[:3], [0.0, 0.5, 1.5], [-1.0, -0.5, 0.0]), "mean_k"),
        ((PROMPTS[:3], [0.0, -0.1, 1.0], [-1.0, -0.5, 0.0]), "mean_k"),
        ((PROMPTS[:3], [0.0, float("nan"), 1.0], [-1.0, -0.5, 0.0]), "mean_k"),
        ((PROMPTS[:3], [[0.0, 0.5, 1.0]], [-1.0, -0.5, 0.0]), "mean_k"),
        ((PROMPTS[:3], ["a", "b", "c"], [-1.0, -0.5, 0.0]), "mean_k"),
        ((PROMPTS[:3], [0.0, 0.5, 1.0], [-1.0, -0.5]), "avg_logprob"),
        ((PROMPTS[:3], [0.0, 0.5, 1.0], [-1.0, 0.5, 0.0]), "avg_logprob"),
        ((PROMPTS[:3], [0.0, 0.5, 1.0], [-1.0, float("inf"), 0.0]), "avg_logprob"),
        ((PROMPTS[:3], [0.0, 0.5, 1.0], [-1.0, float("-inf"), 0.0]), "avg_logprob"),
    ],
)
def test_update_validation_names_the_argument(tiny_encoder, args, name):
    est = make(tiny_encoder)
    before = params(est)
    with pytest.raises(ValueError, match=name):
        est.update(*args)
    assert est.num_updates == 0
    assert_same_params(params(est), before)


@pytest.mark.parametrize("prompts", [[], "a string", [None], ["ok", b"bytes"]])
def test_predict_validation_names_prompts(tiny_encoder, prompts):
    with pytest.raises(ValueError, match="prompts"):
        make(tiny_encoder).predict(prompts)


def test_rounding_above_zero_logprob_is_clamped(tiny_encoder):
    est = make(tiny_encoder)
    a = est.update(PROMPTS[:3], GOOD[1], [-1.0, 1e-6, 0.0])
    b = make(tiny_encoder).update(PROMPTS[:3], GOOD[1], [-1.0, 0.0, 0.0])
    assert a["distill_loss"] == b["distill_loss"]


def test_accepts_numpy_and_tensor_labels(tiny_encoder):
    est = make(tiny_encoder)
    m = est.update(np.array(PROMPTS[:3]), torch.tensor(GOOD[1]), np.array(GOOD[2], dtype=np.float32))
    assert m["skipped"] == 0.0


# ----------------------------------------------------------------------------- checkpoints
def test_save_load_resumes_exactly(tiny_encoder, tmp_path):
    est = make(tiny_encoder)  # dropout on: the RNG stream must round-trip too
    est.update(PROMPTS, MEAN_K, LOGPROB)
    path = est.save(str(tmp_path / "ckpt"))
    assert sorted(os.listdir(path)) == [
        "backbone",
        "config.json",
        "heads.pt",
        "optimizer.pt",
        "replay.json",
        "rng.pt",
        "state.json",
    ]
    loaded = OnlineEstimator.load(path)
    assert loaded.num_updates == 1 and loaded.config == est.config
    assert np.array_equal(loaded.predict(PROMPTS), est.predict(PROMPTS))

    other = list(reversed(PROMPTS))
    m_direct = est.update(other, MEAN_K, LOGPROB)
    m_loaded = loaded.update(other, MEAN_K, LOGPROB)
    for key in ("loss", "score_loss", "distill_loss", "ranking_loss", "grad_norm"):
        assert m_loaded[key] == m_direct[key], key
    assert_same_params(params(loaded), params(est))
    assert np.array_equal(loaded.predict(PROMPTS), est.predict(PROMPTS))


def test_nan_logprob_is_a_prompt_without_distill_target_and_survives_a_checkpoint(tiny_encoder, tmp_path):
    # all NaN is exactly "no log-probs this step" (None): the same update
    a, b = make(tiny_encoder), make(tiny_encoder)
    m_nan = a.update(PROMPTS, MEAN_K, np.full(len(PROMPTS), np.nan))
    m_none = b.update(PROMPTS, MEAN_K, None)
    for key in ("loss", "score_loss", "distill_loss", "ranking_loss", "grad_norm"):
        assert m_nan[key] == m_none[key], key
    assert_same_params(params(a), params(b))
    # mixed: the rows without a target (dynamic sampling's dropped groups) replay after a resume
    mixed = LOGPROB.copy()
    mixed[[1, 4]] = np.nan
    est = make(tiny_encoder)
    est.update(PROMPTS, MEAN_K, mixed)
    loaded = OnlineEstimator.load(est.save(str(tmp_path / "ckpt")))
    assert "NaN" not in (tmp_path / "ckpt" / "replay.json").read_text()  # standard JSON: null
    np.testing.assert_array_equal(np.isnan(loaded._history[0].logprob), np.isnan(mixed))
    other = list(reversed(PROMPTS))
    m_direct, m_loaded = est.update(other, MEAN_K, LOGPROB), loaded.update(other, MEAN_K, LOGPROB)
    for key in ("loss", "distill_loss", "grad_norm"):
        assert m_loaded[key] == m_direct[key], key


def test_save_overwrites_atomically_and_leaves_no_temp(tiny_encoder, tmp_path):
    est = make(tiny_encoder)
    target = tmp_path / "ckpt"
    est.save(str(target))
    est.update(PROMPTS, MEAN_K, LOGPROB)
    est.save(str(target))
    assert os.listdir(tmp_path) == ["ckpt"]
    assert OnlineEstimator.load(str(target)).num_updates == 1


def test_failed_save_keeps_the_previous_checkpoint(tiny_encoder, tmp_path, monkeypatch):
    est = make(tiny_encoder)
    target = tmp_path / "ckpt"
    est.save(str(target))
    est.update(PROMPTS, MEAN_K, LOGPROB)

    real_save = torch.save

    def failing_save(obj, f, *a, **k):
        if str(f).endswith("optimizer.pt"):
            raise OSError("disk full")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError):
        est.save(str(target))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ckpt"]
    assert OnlineEstimator.load(str(target)).num_updates == 0
