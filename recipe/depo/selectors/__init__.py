"""Pre-rollout selectors behind one interface (``base.Selector``), registered by name:

* ``depo``       the estimator's prediction in the window (DEPO);
* ``greso``      GRESO's probabilistic skip of prompts with a zero-variance history;
* ``posterior``  a Beta posterior per prompt, Thompson-sampled (MoPPS);
* ``hybrid``     the estimator's prediction as the prior of each prompt's Beta posterior.

``build_selector(config, window, seed)`` makes the one ``config.name`` names.
"""

from __future__ import annotations

from typing import Any

from recipe.depo.selectors.base import (
    SELECTOR_REGISTRY,
    Decisions,
    Selector,
    get_selector_class,
    register_selector,
)
from recipe.depo.selectors.config import (
    GresoConfig,
    HybridConfig,
    PosteriorConfig,
    SelectorConfig,
    selector_config,
)
from recipe.depo.selectors.depo import DepoWindowSelector
from recipe.depo.selectors.greso import GresoSelector
from recipe.depo.selectors.hybrid import HybridSelector
from recipe.depo.selectors.posterior import PosteriorSelector


def build_selector(config: SelectorConfig | Any, window: tuple[float, float] = (0.15, 0.85), seed: int = 0) -> Selector:
    """The selector ``config`` names (a ``SelectorConfig`` or a mapping checked into one)."""
    if not isinstance(config, SelectorConfig):
        config = selector_config(config)
    return get_selector_class(config.name)(config.block, window=window, seed=seed)


__all__ = [
    "SELECTOR_REGISTRY",
    "Decisions",
    "DepoWindowSelector",
    "GresoConfig",
    "GresoSelector",
    "HybridConfig",
    "HybridSelector",
    "PosteriorConfig",
    "PosteriorSelector",
    "Selector",
    "SelectorConfig",
    "build_selector",
    "get_selector_class",
    "register_selector",
    "selector_config",
]
