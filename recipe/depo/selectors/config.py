"""Settings of the selectors, as verl ``BaseConfig`` dataclasses with the papers' values.

``depo.filter.selector`` (:class:`SelectorConfig`) names the selector and holds one block per
method; each block checks its own fields and :class:`SelectorConfig` gathers every problem of
every block before it raises, each under its full key (``depo.filter.selector.hybrid.
prior_weight: must be in (0.0, inf], got -1``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from verl.base_config import BaseConfig

from recipe.depo.config_fields import DEPOConfigError, FieldChecks, build, is_number

SELECTOR_NAMES = ("depo", "greso", "posterior", "hybrid")
DECISIONS = ("thompson", "mean", "useful")


@dataclass
class GresoConfig(BaseConfig):
    """GRESO (arXiv 2506.02177), the values of the authors' launchers.

    A prompt whose latest ``z`` groups were all right ("easy") or all wrong ("hard") is skipped
    with probability ``1 - p^z``, ``p`` being the exploration probability of its kind. After each
    step, a kind's ``p`` moves by ``p_step``: down (skip more) when that kind's share of the
    step's groups reached its target, up otherwise, within [``p_min``, ``p_max``] (the floor keeps
    every prompt a chance to come back). Targets: ``target_zero_variance`` split one third easy,
    two thirds hard (hard prompts are the likelier to change as the policy improves).
    """

    config_key: ClassVar[str] = "depo.filter.selector.greso"

    target_zero_variance: float = 0.25
    easy_share_of_target: float = 1.0 / 3.0
    p_easy: float = 0.5
    p_hard: float = 0.5
    p_step: float = 0.01
    p_min: float = 0.05
    p_max: float = 0.95

    def __post_init__(self) -> None:
        check = FieldChecks(self)
        check.number("target_zero_variance", lo=0.0, hi=1.0)
        check.number("easy_share_of_target", lo=0.0, hi=1.0)
        check.number("p_step", lo=0.0, hi=1.0, lo_open=True)
        for name in ("p_min", "p_max"):
            check.number(name, lo=0.0, hi=1.0)
        bounds_ok = all(is_number(getattr(self, n)) and 0 <= getattr(self, n) <= 1 for n in ("p_min", "p_max"))
        if bounds_ok and not self.p_min <= self.p_max:
            check.fail("p_min", f"must be <= p_max ({self.p_max}), got {self.p_min}")
            bounds_ok = False
        for name in ("p_easy", "p_hard"):
            lo, hi = (self.p_min, self.p_max) if bounds_ok else (0.0, 1.0)
            check.number(name, lo=lo, hi=hi)
        check.done()


@dataclass
class PosteriorConfig(BaseConfig):
    """A Beta posterior of each prompt's success rate (MoPPS, arXiv 2507.04632; its public code's
    values). Each labelled group adds its successes and failures after the old counts were
    multiplied by ``decay`` (1 = no forgetting); a prompt is kept when a Thompson sample of its
    posterior (``decision: thompson``) or its posterior mean (``mean``) lies in the filter's window
    (``useful``: and the posterior expects at least the useful-group share of a prompt at the
    window's edge), and the fill completes a batch with the scores closest to ``target``."""

    config_key: ClassVar[str] = "depo.filter.selector.posterior"

    prior_alpha: float = 1.0
    prior_beta: float = 1.0
    decay: float = 1.0
    target: float = 0.5
    decision: str = "thompson"

    def __post_init__(self) -> None:
        check = FieldChecks(self)
        check.number("prior_alpha", lo=0.0, lo_open=True)
        check.number("prior_beta", lo=0.0, lo_open=True)
        check.number("decay", lo=0.0, hi=1.0, lo_open=True)
        check.number("target", lo=0.0, hi=1.0)
        check.choice("decision", DECISIONS)
        check.done()


@dataclass
class HybridConfig(BaseConfig):
    """The estimator's text prediction as each prompt's prior: Beta(w q, w (1 - q)) for a
    prediction q and prior weight w (the prior counts as w rollouts), plus the prompt's own
    outcomes with ``decay``. An unseen prompt is judged by its text alone (its posterior mean is
    q); a seen one by its text and its outcomes. ``decision: mean`` keeps a prompt when the
    posterior mean lies in the window, so it decides an unseen prompt exactly as ``depo`` does;
    ``useful`` (the default) also asks that the posterior expect at least the useful-group share
    of a prompt at the window's edge, so it rejects a prompt near an edge that the prior and the
    outcomes pin down only loosely (before the first outcome it decides as ``mean``);
    ``thompson`` samples as the posterior selector does.

    ``prior_weight: auto`` (the default) sets w from how well the predictions have matched the
    outcomes so far (empirical Bayes, moments with per-step forgetting ``auto_decay``), within
    [``min_prior_weight``, ``max_prior_weight``]: an estimator whose predictions explain the
    outcomes gets a heavy prior, one that does not is soon outweighed by a prompt's own history.
    A number fixes w."""

    config_key: ClassVar[str] = "depo.filter.selector.hybrid"

    prior_weight: Any = "auto"
    min_prior_weight: float = 0.5
    max_prior_weight: float = 64.0
    auto_decay: float = 0.9
    decay: float = 0.5
    target: float = 0.5
    decision: str = "useful"

    def __post_init__(self) -> None:
        check = FieldChecks(self)
        if self.prior_weight != "auto":
            if not is_number(self.prior_weight) or self.prior_weight <= 0:
                check.fail("prior_weight", f"must be 'auto' or a number > 0, got {self.prior_weight!r}")
            else:
                object.__setattr__(self, "prior_weight", float(self.prior_weight))
        check.number("min_prior_weight", lo=0.0, lo_open=True)
        check.number("max_prior_weight", lo=0.0, lo_open=True)
        bounds = (self.min_prior_weight, self.max_prior_weight)
        if all(is_number(b) and b > 0 for b in bounds) and not bounds[0] <= bounds[1]:
            check.fail("min_prior_weight", f"must be <= max_prior_weight ({bounds[1]}), got {bounds[0]}")
        check.number("auto_decay", lo=0.0, hi=1.0, lo_open=True)
        check.number("decay", lo=0.0, hi=1.0, lo_open=True)
        check.number("target", lo=0.0, hi=1.0)
        check.choice("decision", DECISIONS)
        check.done()


BLOCKS: dict[str, type] = {"greso": GresoConfig, "posterior": PosteriorConfig, "hybrid": HybridConfig}


@dataclass
class SelectorConfig(BaseConfig):
    """``depo.filter.selector``: which selector decides (``name``) and the settings of each."""

    config_key: ClassVar[str] = "depo.filter.selector"

    name: str = "depo"
    greso: GresoConfig = field(default_factory=GresoConfig)
    posterior: PosteriorConfig = field(default_factory=PosteriorConfig)
    hybrid: HybridConfig = field(default_factory=HybridConfig)

    def __post_init__(self) -> None:
        check = FieldChecks(self)
        if self.name not in SELECTOR_NAMES:
            check.fail("name", f"unknown selector {self.name!r}; known: {', '.join(SELECTOR_NAMES)}")
        for key, block_cls in BLOCKS.items():
            value = getattr(self, key)
            if not isinstance(value, block_cls):  # a plain mapping, e.g. from YAML
                object.__setattr__(self, key, build(block_cls, value, check.problems))
        check.done()

    @property
    def block(self) -> Any:
        """The settings of the named selector (None for ``depo``, which has none of its own)."""
        return getattr(self, self.name, None) if self.name in BLOCKS else None


def selector_config(values: Any) -> SelectorConfig:
    """``SelectorConfig`` from a mapping (YAML / CLI), every problem reported at once."""
    problems: list[tuple[str, str]] = []
    config = build(SelectorConfig, values, problems)
    if problems:
        raise DEPOConfigError(problems)
    return config
