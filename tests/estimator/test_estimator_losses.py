"""Loss math against values worked out by hand."""

import math

import pytest
import torch

from recipe.depo.estimator import distill_loss, objective, ranking_loss, score_loss
from recipe.depo.estimator.losses import DISTILL_TARGET_MAX, distill_target


def t(*values):
    return torch.tensor(values, dtype=torch.float32)


def test_score_loss_soft_labels():
    # logit 0 vs label 0.5: ln 2.  logit ln 3 (p = 0.75) vs label 1: -ln 0.75.
    got = score_loss(t(0.0, math.log(3.0)), t(0.5, 1.0))
    assert got.item() == pytest.approx((math.log(2.0) - math.log(0.75)) / 2, abs=1e-6)


def test_score_loss_fractional_label():
    # p = 0.75, y = 0.25: -(0.25 ln 0.75 + 0.75 ln 0.25)
    got = score_loss(t(math.log(3.0)), t(0.25))
    assert got.item() == pytest.approx(-(0.25 * math.log(0.75) + 0.75 * math.log(0.25)), abs=1e-6)


def test_distill_target_is_exp_logprob_clamped():
    got = distill_target(t(0.0, math.log(0.25), -100.0))
    assert got.tolist() == pytest.approx([1 - 1e-4, 0.25, 1e-4], abs=1e-7)


def test_distill_loss_hand_value():
    # logit ln 3 (p = 0.75) vs target 1 - 1e-4 (log-prob 0); logit 0 vs target 0.25: ln 2.
    y = DISTILL_TARGET_MAX
    first = -(y * math.log(0.75) + (1 - y) * math.log(0.25))
    got = distill_loss(t(math.log(3.0), 0.0), t(0.0, math.log(0.25)))
    assert got.item() == pytest.approx((first + math.log(2.0)) / 2, abs=1e-6)


def test_ranking_loss_hand_value_and_gradient():
    # labels 0.9, 0.5, 0.52 with threshold 0.05: valid ordered pairs (0,1) and (0,2) only
    # (0.52 - 0.5 < 0.05). hinge(0,1) = relu(0.5 - (0.2 - 1.0)) = 1.3, hinge(0,2) = relu(0.5 - 0.2) = 0.3.
    s = t(0.2, 1.0, 0.0).requires_grad_(True)
    got = ranking_loss(s, t(0.9, 0.5, 0.52), threshold=0.05, margin=0.5)
    assert got.item() == pytest.approx(0.8, abs=1e-6)
    got.backward()
    # each active pair contributes -1/2 to s_i and +1/2 to s_j
    assert s.grad.tolist() == pytest.approx([-1.0, 0.5, 0.5], abs=1e-6)


def test_ranking_loss_satisfied_margin_is_zero_but_pairs_count():
    got = ranking_loss(t(2.0, 1.0, 0.0), t(0.9, 0.5, 0.52), threshold=0.05, margin=0.5)
    assert got.item() == 0.0


def test_ranking_loss_threshold_is_strict():
    # 0.75 > 0.5 + 0.25 is false (exact binary fractions): no pair, loss 0.
    s = t(0.0, 3.0).requires_grad_(True)
    got = ranking_loss(s, t(0.75, 0.5), threshold=0.25, margin=0.5)
    assert got.item() == 0.0
    # with a smaller threshold the pair exists: relu(0.5 - (0 - 3)) = 3.5
    assert ranking_loss(s, t(0.75, 0.5), threshold=0.2, margin=0.5).item() == pytest.approx(3.5)


@pytest.mark.parametrize("labels", [(0.5, 0.5, 0.5), (1.0,)])
def test_ranking_loss_no_valid_pair_is_zero_with_finite_grad(labels):
    s = torch.zeros(len(labels), requires_grad=True)
    got = ranking_loss(s, t(*labels), threshold=0.05, margin=0.5)
    assert got.item() == 0.0
    assert got.requires_grad
    got.backward()
    assert torch.equal(s.grad, torch.zeros(len(labels)))


def _example():
    s = t(0.2, 1.0, 0.0)
    d = t(0.0, math.log(3.0), -1.0)
    y = t(0.9, 0.5, 0.52)
    lp = t(math.log(0.5), math.log(0.25), -3.0)
    return s, d, y, lp


def test_objective_weights_and_ablations():
    s, d, y, lp = _example()
    S, D, R = score_loss(s, y), distill_loss(d, lp), ranking_loss(s, y, 0.05, 0.5)
    assert R.item() == pytest.approx(0.8, abs=1e-6)  # the hand-computed ranking case above

    def loss(w_distill, w_ranking, distill=D):
        return objective(S, distill, R, w_distill=w_distill, w_ranking=w_ranking).item()

    assert loss(0.5, 3.0) == pytest.approx(S.item() + 0.5 * D.item() + 3.0 * 0.8, abs=1e-5)
    assert loss(0.5, 0.0) == pytest.approx(S.item() + 0.5 * D.item(), abs=1e-6)
    assert loss(0.0, 3.0) == pytest.approx(S.item() + 3.0 * 0.8, abs=1e-5)
    assert loss(0.0, 0.0) == pytest.approx(S.item(), abs=1e-6)
    assert loss(0.5, 3.0, distill=None) == pytest.approx(S.item() + 3.0 * 0.8, abs=1e-5)  # no log-probs
    assert objective(1.0, 2.0, 3.0, w_distill=0.5, w_ranking=3.0) == pytest.approx(11.0)  # floats too


def test_zero_weight_term_cannot_leak_nan():
    s, d, y, lp = _example()
    nan_distill = distill_loss(t(float("nan"), 0.0, 0.0), lp)
    out = objective(score_loss(s, y), nan_distill, ranking_loss(s, y, 0.05, 0.5), w_distill=0.0, w_ranking=3.0)
    assert math.isfinite(out.item())
