"""Selector settings: the papers' values, and bad ones refused naming the key, all at once."""

import pytest

from recipe.depo.config_fields import DEPOConfigError
from recipe.depo.selectors import (
    SELECTOR_REGISTRY,
    GresoSelector,
    HybridSelector,
    PosteriorSelector,
    build_selector,
    get_selector_class,
    register_selector,
    selector_config,
)


def test_defaults_are_the_papers_values():
    cfg = selector_config({})
    assert cfg.name == "depo" and cfg.block is None
    g = cfg.greso
    assert (g.target_zero_variance, g.p_easy, g.p_hard, g.p_step, g.p_min, g.p_max) == (
        0.25,
        0.5,
        0.5,
        0.01,
        0.05,
        0.95,
    )
    p = cfg.posterior
    assert (p.prior_alpha, p.prior_beta, p.decay, p.target, p.decision) == (1.0, 1.0, 1.0, 0.5, "thompson")


def test_build_selector_makes_the_named_one_with_its_block():
    sel = build_selector({"name": "posterior", "posterior": {"decay": 0.7}}, window=(0.2, 0.8), seed=1)
    assert isinstance(sel, PosteriorSelector) and sel.config.decay == 0.7 and sel.window == (0.2, 0.8)
    assert isinstance(build_selector({"name": "greso"}), GresoSelector)
    assert isinstance(build_selector({"name": "hybrid"}), HybridSelector)
    assert set(SELECTOR_REGISTRY) == {"depo", "greso", "posterior", "hybrid"}


def test_every_problem_is_reported_at_once_under_its_key():
    with pytest.raises(DEPOConfigError) as err:
        selector_config(
            {
                "name": "mopps",
                "hybrid": {"prior_weight": -1, "decay": 1.5},
                "posterior": {"decay": 0.0, "prior_alpha": -2, "decision": "greedy"},
                "greso": {"p_min": 0.5, "p_max": 0.4, "target_zero_variance": 2},
                "typo": 1,
            }
        )
    keys = [key for key, _ in err.value.problems]
    assert keys == [
        "depo.filter.selector.typo",
        "depo.filter.selector.name",
        "depo.filter.selector.greso.target_zero_variance",
        "depo.filter.selector.greso.p_min",
        "depo.filter.selector.posterior.prior_alpha",
        "depo.filter.selector.posterior.decay",
        "depo.filter.selector.posterior.decision",
        "depo.filter.selector.hybrid.prior_weight",
        "depo.filter.selector.hybrid.decay",
    ]
    text = str(err.value)
    assert "unknown selector 'mopps'; known: depo, greso, posterior, hybrid" in text
    assert "depo.filter.selector.hybrid.prior_weight: must be 'auto' or a number > 0, got -1" in text
    assert "depo.filter.selector.posterior.decay: must be in (0.0, 1.0], got 0.0" in text


def test_decay_of_one_is_no_forgetting_and_is_allowed():
    assert selector_config({"posterior": {"decay": 1}}).posterior.decay == 1.0


def test_registry_refuses_a_second_class_under_a_taken_name():
    with pytest.raises(ValueError, match="already registered"):

        @register_selector("greso")
        class Other(GresoSelector):
            pass

    with pytest.raises(ValueError, match="unknown selector 'nope'"):
        get_selector_class("nope")


def test_a_window_outside_the_unit_interval_is_refused():
    with pytest.raises(ValueError, match="window must be"):
        GresoSelector(window=(0.5, 0.4))
