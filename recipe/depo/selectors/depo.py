"""DEPO's own decision behind the selector interface: keep a prompt whose predicted accuracy lies
in the window. No state; the estimator that makes the predictions learns elsewhere."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from recipe.depo.selectors.base import Decisions, Selector, register_selector


@register_selector("depo")
class DepoWindowSelector(Selector):
    needs_estimator = True

    def __init__(self, config: Any = None, window: tuple[float, float] = (0.15, 0.85), seed: int = 0) -> None:
        super().__init__(config, window, seed)

    def decide(self, prompt_ids: Sequence[Any], predictions: Sequence[float] | None = None) -> Decisions:
        score = self._predictions(predictions, len(self._ids(prompt_ids)))
        return Decisions(keep=self.in_window(score), score=score)

    def update(self, prompt_ids: Sequence[Any], mean_k: Sequence[float], n: int) -> dict[str, float]:
        self._outcomes(prompt_ids, mean_k, n)
        return {}

    def _state(self) -> dict:
        return {}

    def _load_state(self, state: dict) -> None:
        pass
