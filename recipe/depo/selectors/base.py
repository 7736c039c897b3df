"""The interface every pre-rollout selector implements, and the registry that names them.

A selector decides, per candidate prompt and before any rollout, whether the prompt is worth
rolling out; after the step it learns from the labelled groups. The trainer (or the selection
benchmark) owns the scan: it draws candidates, asks ``decide`` and stops when the batch is full
or the scan cap is hit, then completes the batch with the rejected candidates whose ``score`` is
closest to ``centre``. So a selector is pure bookkeeping with no Ray, no hydra and no model in
it: ``decide`` / ``update`` / ``state_dict`` / ``load_state_dict``, tested with exact numbers.

Selectors are registered by name, in the style of verl's ``core_algos`` registries
(``register_adv_est``): ``@register_selector("greso")`` on the class, ``get_selector_class(name)``
to look one up, ``build_selector(config, window)`` to make the one a config names.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np


@dataclass(frozen=True)
class Decisions:
    """Per candidate, in input order: ``keep`` (roll it out) and ``score``, the selector's guess
    of the prompt's accuracy in [0, 1], which the scan's fill ranks by closeness to the centre."""

    keep: np.ndarray
    score: np.ndarray

    def __len__(self) -> int:
        return len(self.keep)


class Selector(ABC):
    """One selection method. Subclasses set ``name`` (by ``register_selector``) and
    ``needs_estimator`` (``decide`` then requires the estimator's predictions, one per prompt)."""

    name: ClassVar[str] = ""
    needs_estimator: ClassVar[bool] = False

    def __init__(self, config: Any, window: tuple[float, float] = (0.15, 0.85), seed: int = 0) -> None:
        low, high = float(window[0]), float(window[1])
        if not (0.0 <= low < high <= 1.0):
            raise ValueError(f"{self.name} selector: window must be 0 <= low < high <= 1, got {list(window)!r}")
        self.config = config
        self.window = (low, high)
        self.seed = int(seed)
        # The selector owns its RNG (saved in state_dict), so its draws neither disturb nor depend
        # on anything else in the process, and a resumed run makes the same decisions.
        self.rng = np.random.default_rng([self.seed, 23])

    @property
    def centre(self) -> float:
        """Where the fill looks for the rejected candidates to complete a batch with."""
        return 0.5 * (self.window[0] + self.window[1])

    def in_window(self, values: np.ndarray) -> np.ndarray:
        return (values >= self.window[0]) & (values <= self.window[1])

    @abstractmethod
    def decide(self, prompt_ids: Sequence[Any], predictions: Sequence[float] | None = None) -> Decisions:
        """Keep decisions for these candidates (ids are compared as strings)."""

    @abstractmethod
    def update(self, prompt_ids: Sequence[Any], mean_k: Sequence[float], n: int) -> dict[str, float]:
        """Learn from one step's labelled groups: per rolled-out prompt its mean@k over n rollouts.
        Returns metrics (plain floats)."""

    @abstractmethod
    def _state(self) -> dict:
        """The selector's own state, JSON-ready."""

    @abstractmethod
    def _load_state(self, state: dict) -> None:
        """Restore ``_state()``; must leave the selector untouched when it raises."""

    def state_dict(self) -> dict:
        return {"selector": self.name, "seed": self.seed, "rng": self.rng.bit_generator.state, **self._state()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("selector") != self.name:
            raise ValueError(f"selector state is for {state.get('selector')!r}, not {self.name!r}")
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        self._load_state(state)
        self.rng = rng

    # ------------------------------------------------------------------ input checks
    def _ids(self, prompt_ids: Sequence[Any]) -> list[str]:
        if isinstance(prompt_ids, (str, bytes)):
            raise ValueError(f"{self.name} selector: prompt_ids must be a sequence of ids, not one string")
        return [str(i) for i in prompt_ids]

    def _predictions(self, predictions: Sequence[float] | None, count: int) -> np.ndarray:
        if predictions is None:
            raise ValueError(f"{self.name} selector needs the estimator's predictions, one per prompt")
        values = np.asarray(predictions, dtype=np.float64).reshape(-1)
        if len(values) != count:
            raise ValueError(f"{self.name} selector: {len(values)} predictions for {count} prompts")
        if not np.all(np.isfinite(values)) or np.any((values < 0) | (values > 1)):
            raise ValueError(f"{self.name} selector: predictions must be accuracies in [0, 1]")
        return values

    def _outcomes(self, prompt_ids: Sequence[Any], mean_k: Sequence[float], n: int) -> tuple[list[str], np.ndarray]:
        ids = self._ids(prompt_ids)
        values = np.asarray(mean_k, dtype=np.float64).reshape(-1)
        if len(values) != len(ids):
            raise ValueError(f"{self.name} selector: {len(values)} outcomes for {len(ids)} prompts")
        if not np.all(np.isfinite(values)) or np.any((values < 0) | (values > 1)):
            raise ValueError(f"{self.name} selector: mean_k must lie in [0, 1]")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"{self.name} selector: n (rollouts per prompt) must be an int >= 1, got {n!r}")
        return ids, values


def zero_variance(mean_k: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(all right, all wrong) per group: mean@k within half a rollout of 1 or of 0."""
    tol = 0.5 / n
    return mean_k >= 1.0 - tol, mean_k <= tol


def finite_float(value: Any, what: str) -> float:
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"selector state: {what} is not a finite number: {value!r}")
    return out


# ---------------------------------------------------------------------- registry
SELECTOR_REGISTRY: dict[str, type[Selector]] = {}


def register_selector(name: str) -> Callable[[type[Selector]], type[Selector]]:
    """Class decorator: make a selector available under ``name``."""

    def decorator(cls: type[Selector]) -> type[Selector]:
        if name in SELECTOR_REGISTRY and SELECTOR_REGISTRY[name] is not cls:
            raise ValueError(f"selector {name!r} is already registered by {SELECTOR_REGISTRY[name].__qualname__}")
        cls.name = name
        SELECTOR_REGISTRY[name] = cls
        return cls

    return decorator


def get_selector_class(name: str) -> type[Selector]:
    if name not in SELECTOR_REGISTRY:
        raise ValueError(f"unknown selector {name!r}; known: {', '.join(sorted(SELECTOR_REGISTRY))}")
    return SELECTOR_REGISTRY[name]
