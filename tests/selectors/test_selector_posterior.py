"""The Beta posterior with decay, Thompson sampling and the hybrid's text prior, by hand."""

import json

import numpy as np
import pytest

from recipe.depo.selectors import (
    DepoWindowSelector,
    HybridConfig,
    HybridSelector,
    PosteriorConfig,
    PosteriorSelector,
)
from recipe.depo.selectors.posterior import useful_share


def test_posterior_update_with_decay_is_moppss_recursion():
    sel = PosteriorSelector(PosteriorConfig(decay=0.5, decision="mean"))
    sel.update(["x"], [0.75], n=8)  # 6 right, 2 wrong: Beta(1 + 6, 1 + 2)
    assert sel.posterior(["x"]) == ([7.0], [3.0])
    sel.update(["x"], [0.25], n=8)
    # MoPPS: alpha <- 0.5 * 7 + 0.5 * 1 + 2 = 6; beta <- 0.5 * 3 + 0.5 * 1 + 6 = 8.
    alpha, beta = sel.posterior(["x", "unseen"])
    assert alpha.tolist() == [6.0, 1.0] and beta.tolist() == [8.0, 1.0]
    d = sel.decide(["x"])
    assert d.score.tolist() == pytest.approx([6 / 14]) and d.keep.tolist() == [True]


def test_posterior_mean_outside_the_window_is_rejected():
    sel = PosteriorSelector(PosteriorConfig(decision="mean"))
    sel.update(["easy", "hard"], [1.0, 0.0], n=8)  # Beta(9, 1) and Beta(1, 9)
    d = sel.decide(["easy", "hard", "new"])
    assert d.score.tolist() == pytest.approx([0.9, 0.1, 0.5])
    assert d.keep.tolist() == [False, False, True]


def test_thompson_samples_come_from_the_selectors_own_seeded_rng():
    sel = PosteriorSelector(seed=4)
    sel.update(["a", "b"], [1.0, 0.5], n=4)
    d = sel.decide(["a", "b", "c"])
    expected = np.random.default_rng([4, 23]).beta([5.0, 3.0, 1.0], [1.0, 3.0, 1.0])
    assert d.score.tolist() == expected.tolist()
    assert d.keep.tolist() == [bool(0.15 <= s <= 0.85) for s in expected]
    assert sel.centre == 0.5  # the fill's target


def test_useful_share_is_the_beta_binomial_chance_of_a_mixed_group():
    # Beta(1, 1), groups of 2: E[p^2] = E[(1 - p)^2] = 1/3, so a third of groups are mixed.
    assert useful_share(np.array([1.0]), np.array([1.0]), 2).tolist() == pytest.approx([1 / 3])
    # Beta(10, 2), groups of 8: E[p^8] = prod_{i<8} (10 + i) / (12 + i) = 10 * 11 / (18 * 19) and
    # E[(1 - p)^8] = 9! / (12 * 13 * ... * 19).
    expected = 1 - 110 / 342 - 362880 / 3047466240
    assert useful_share(np.array([10.0]), np.array([2.0]), 8).tolist() == pytest.approx([expected])


def test_useful_decision_rejects_a_loosely_pinned_prompt_near_the_edge():
    sel = HybridSelector(HybridConfig(prior_weight=4, decay=0.5, decision="useful"))
    # before any outcome (no group size yet) it decides by the mean, as depo does
    assert sel.decide(["x", "y"], [0.5, 0.9]).keep.tolist() == [True, False]
    sel.update(["x", "y"], [1.0, 0.5], n=8)
    # x: Beta(2 + 8, 2), mean 0.833 (in the window), but a group of 8 is mixed with chance 0.678,
    # below the 0.7275 of a prompt known to sit at 0.85 (1 - 0.85^8 - 0.15^8): rejected.
    # y: Beta(2 + 4, 2 + 4): mixed with chance 1 - 2 * (6 * 7 * ... * 11) / (14 * 15 * ... * 19).
    d = sel.decide(["x", "y"], [0.5, 0.5])
    assert d.score.tolist() == pytest.approx([10 / 12, 0.5])  # the fill still ranks by the mean
    assert d.keep.tolist() == [False, True]
    assert useful_share(np.array([6.0]), np.array([6.0]), 8).tolist() == pytest.approx([1 - 2 * 332640 / 19535040])
    # the same outcomes decided by the mean keep x
    mean = HybridSelector(HybridConfig(prior_weight=4, decay=0.5, decision="mean"))
    mean.update(["x", "y"], [1.0, 0.5], n=8)
    assert mean.decide(["x", "y"], [0.5, 0.5]).keep.tolist() == [True, True]


def test_hybrid_decides_an_unseen_prompt_by_its_prediction_alone():
    preds = [0.1, 0.15, 0.5, 0.85, 0.9]
    hybrid, depo = HybridSelector(), DepoWindowSelector()
    a, b = hybrid.decide(list("abcde"), preds), depo.decide(list("abcde"), preds)
    assert a.keep.tolist() == b.keep.tolist() == [False, True, True, True, False]
    assert a.score.tolist() == pytest.approx(preds)
    with pytest.raises(ValueError, match="needs the estimator's predictions"):
        hybrid.decide(["a"])


def test_hybrid_prior_is_a_beta_centred_on_the_prediction():
    sel = HybridSelector(HybridConfig(prior_weight=4, decay=0.5, decision="mean"))
    sel.update(["x"], [1.0], n=8)
    # Prior Beta(4 * 0.5, 4 * 0.5) plus 8 right: Beta(10, 2), mean 0.833: still in the window.
    alpha, beta = sel.posterior(["x"], [0.5])
    assert (alpha.tolist(), beta.tolist()) == ([10.0], [2.0])
    assert sel.decide(["x"], [0.5]).keep.tolist() == [True]
    # The same outcomes on a prompt the text calls easier (0.8): Beta(3.2 + 8, 0.8).
    assert sel.decide(["x"], [0.8]).score.tolist() == pytest.approx([11.2 / 12])
    sel.update(["x"], [1.0], n=8)  # decayed: 0.5 * 8 + 8 = 12 right
    assert sel.decide(["x"], [0.5]).score.tolist() == pytest.approx([14 / 16])  # 0.875: rejected
    assert sel.decide(["x"], [0.5]).keep.tolist() == [False]


def test_hybrid_auto_prior_weight_from_how_well_predictions_matched():
    sel = HybridSelector(HybridConfig(auto_decay=0.5))
    assert sel.prior_weight == 64.0  # no evidence yet: only unseen prompts, which w does not change
    sel.decide(["a", "b", "c"], [0.5, 0.5, 0.9])
    sel.update(["a", "b"], [1.0, 0.5], n=8)  # c was never rolled out
    # R = ((1 - 0.5)^2 + 0) / (0.25 + 0.25) = 0.5; w = (1 - R) / (R - 1/8) = 4/3.
    assert sel.prior_weight == pytest.approx(4 / 3)
    assert sel.posterior(["a"], [0.5])[0].tolist() == pytest.approx([2 / 3 + 8])
    sel.decide(["a"], [0.6])
    sel.update(["a"], [0.625], n=8)
    # Sums forget by half: squared 0.5 * 0.25 + 0.025^2, spread 0.5 * 0.5 + 0.24.
    ratio = (0.125 + 0.025**2) / (0.25 + 0.24)
    assert sel.prior_weight == pytest.approx((1 - ratio) / (ratio - 1 / 8))
    # Predictions as good as the binomial noise allows: the ceiling; useless ones: the floor.
    perfect = HybridSelector()
    perfect.decide(["a", "b"], [0.5, 0.5])
    perfect.update(["a", "b"], [0.5, 0.5], n=8)
    assert perfect.prior_weight == 64.0
    useless = HybridSelector()
    useless.decide(["a", "b"], [0.5, 0.5])
    useless.update(["a", "b"], [1.0, 0.0], n=8)
    assert useless.prior_weight == 0.5


@pytest.mark.parametrize(
    "make",
    [
        lambda: PosteriorSelector(seed=2),
        lambda: HybridSelector(HybridConfig(decision="thompson"), seed=2),
        lambda: HybridSelector(seed=2),  # decision: useful, which needs the group size back
    ],
)
def test_state_dict_round_trip_gives_the_same_next_decisions(make):
    sel = make()
    rng = np.random.default_rng(1)
    ids = [f"p{i}" for i in range(30)]
    for _ in range(5):
        preds = rng.random(len(ids))
        sel.decide(ids, preds)
        sel.update(ids[:20], rng.integers(0, 9, size=20) / 8, n=8)
    state = json.loads(json.dumps(sel.state_dict()))
    resumed = make()
    resumed.load_state_dict(state)
    preds = rng.random(len(ids))
    a, b = sel.decide(ids, preds), resumed.decide(ids, preds)
    assert a.score.tolist() == b.score.tolist() and a.keep.tolist() == b.keep.tolist()


def test_outcomes_are_checked():
    sel = PosteriorSelector()
    with pytest.raises(ValueError, match="mean_k must lie in"):
        sel.update(["a"], [1.5], n=8)
    with pytest.raises(ValueError, match="2 outcomes for 1 prompts"):
        sel.update(["a"], [0.5, 0.5], n=8)
    with pytest.raises(ValueError, match="n \\(rollouts per prompt\\)"):
        sel.update(["a"], [0.5], n=0)
    assert sel.counts == {}
