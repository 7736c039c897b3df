"""GRESO's skip probability 1 - p^z, its adaptation toward the target zero-variance share, by hand."""

import json

import numpy as np
import pytest

from recipe.depo.selectors import GresoConfig, GresoSelector


def draws(seed, count):
    """The uniforms a selector seeded ``seed`` draws, in order (its RNG is documented as
    default_rng([seed, 23]))."""
    return np.random.default_rng([seed, 23]).random(count)


def test_unseen_and_informative_prompts_are_always_kept_without_a_draw():
    sel = GresoSelector(seed=3)
    before = sel.rng.bit_generator.state
    d = sel.decide(["a", "b", 7])
    assert d.keep.tolist() == [True, True, True] and d.score.tolist() == [0.5, 0.5, 0.5]
    sel.update(["a"], [0.375], n=8)  # 3 of 8 right: a gradient, z stays 0
    d = sel.decide(["a"])
    assert d.keep.tolist() == [True] and d.score.tolist() == [0.375]
    assert sel.rng.bit_generator.state == before  # nothing to draw for


def test_skip_probability_grows_with_the_zero_variance_streak():
    sel = GresoSelector()
    sel.update(["easy", "hard", "mixed"], [1.0, 0.0, 0.5], n=8)
    # p_easy = p_hard = 0.5 (no adaptation yet: no candidate had a zero-variance history).
    assert sel.p == {"easy": 0.5, "hard": 0.5}
    assert sel.skip_probability("easy") == pytest.approx(0.5)
    assert sel.skip_probability("hard") == pytest.approx(0.5)
    assert sel.skip_probability("mixed") == 0.0 and sel.skip_probability("unseen") == 0.0
    sel.update(["easy"], [1.0], n=8)
    assert sel.skip_probability("easy") == pytest.approx(1 - 0.5**2)
    sel.update(["easy"], [0.875], n=8)  # one wrong answer: the streak ends
    assert sel.skip_probability("easy") == 0.0


def test_skip_decisions_follow_the_seeded_uniforms():
    sel = GresoSelector(seed=11)
    sel.update(["e1", "e2", "h1", "h2", "h3"], [1.0, 1.0, 0.0, 0.0, 0.0], n=4)
    sel.update(["h3"], [0.0], n=4)  # z = 2 for h3
    d = sel.decide(["new", "e1", "e2", "h1", "h2", "h3"])
    u = draws(11, 5)  # one uniform per candidate with a zero-variance history, in order
    threshold = [0.5, 0.5, 0.5, 0.5, 0.75]  # skip when u < 1 - p^z
    assert d.keep.tolist() == [True, *[bool(x >= t) for x, t in zip(u, threshold)]]
    assert d.score.tolist() == [0.5, 1.0, 1.0, 0.0, 0.0, 0.0]


def test_adaptation_moves_each_kind_toward_its_target_share_within_the_floor():
    cfg = GresoConfig(p_easy=0.06, p_hard=0.94)
    sel = GresoSelector(cfg)
    sel.update(["a", "b", "c", "d"], [1.0, 1.0, 0.5, 0.5], n=8)
    # No candidate had a zero-variance history yet: nothing adapts.
    assert sel.p == {"easy": 0.06, "hard": 0.94}
    sel.decide(["a"])  # a has z = 1: skipping is possible from now on
    m = sel.update(["a", "b", "c", "d"], [1.0, 1.0, 0.5, 0.5], n=8)
    # Easy share 0.5 >= 0.25 / 3: p_easy down by 0.01. Hard share 0 < 0.25 * 2/3: p_hard up.
    assert (m["easy_share"], m["hard_share"], m["adapted"]) == (0.5, 0.0, 1.0)
    assert sel.p["easy"] == pytest.approx(0.05) and sel.p["hard"] == pytest.approx(0.95)
    sel.decide(["a"])
    sel.update(["a", "b", "c", "d"], [1.0, 1.0, 0.5, 0.5], n=8)
    # The floor (p_min 0.05) and the ceiling (p_max 0.95) hold.
    assert sel.p["easy"] == pytest.approx(0.05) and sel.p["hard"] == pytest.approx(0.95)
    # Without a new decision over a zero-variance prompt, the next update does not adapt.
    assert sel.update(["c"], [0.5], n=8)["adapted"] == 0.0


def test_state_dict_round_trip_gives_the_same_next_decisions():
    sel = GresoSelector(seed=5)
    rng = np.random.default_rng(0)
    ids = [f"p{i}" for i in range(40)]
    for _ in range(6):
        sel.decide(ids)
        sel.update(ids, rng.choice([0.0, 1.0, 0.5], size=len(ids)), n=8)
    state = json.loads(json.dumps(sel.state_dict()))  # checkpoints are JSON
    resumed = GresoSelector(seed=999)
    resumed.load_state_dict(state)
    a, b = sel.decide(ids), resumed.decide(ids)
    assert a.keep.tolist() == b.keep.tolist() and a.score.tolist() == b.score.tolist()
    assert (~a.keep).sum() > 0  # the comparison covered real random skips
    assert sel.update(ids, np.ones(40), 8) == resumed.update(ids, np.ones(40), 8)


def test_bad_state_leaves_the_selector_untouched():
    sel = GresoSelector()
    sel.update(["a"], [1.0], n=8)
    state = sel.state_dict()
    state["history"]["b"] = [2, None, 0.0]  # a streak without a kind
    with pytest.raises(ValueError, match="greso selector state: bad history entry for prompt 'b'"):
        sel.load_state_dict(state)
    assert list(sel.history) == ["a"]
    with pytest.raises(ValueError, match="not 'greso'"):
        sel.load_state_dict({**sel.state_dict(), "selector": "posterior"})
