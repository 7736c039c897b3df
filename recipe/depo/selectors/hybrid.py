"""The estimator's text prediction as the prior of each prompt's Beta posterior.

What neither side has alone: DEPO's estimator generalises from text to prompts it never saw but
keeps no memory of a prompt's own outcomes; a history selector (GRESO, MoPPS) remembers outcomes
but knows nothing of a prompt before it repeats. Here a candidate with prediction q gets the
prior Beta(w q, w (1 - q)), worth w rollouts, and its own decayed outcome counts on top (the same
counts as the posterior selector). The prior is rebuilt from the current prediction at every
decision, so as the estimator follows the policy, so does the prior. An unseen prompt scores
exactly q: with ``decision: mean`` it is decided as ``depo`` decides it; with ``useful`` (the
default) a q near the window's edge is also rejected when the prior is worth little (a small w:
predictions that have explained the outcomes poorly), since a group there is likely to come out
all right or all wrong: there the estimator's misreadings of the text cost most
(docs/selectors.md, "Why the hybrid's defaults").

How much a prediction is worth (``prior_weight: auto``): under the prior, a group's mean@k m of
n rollouts scatters around q with E[(m - q)^2] = q (1 - q) (1 + w / n) / (w + 1). So the ratio
R = sum (m - q)^2 / sum q (1 - q) over labelled groups (the predictions made when they were
decided) gives w = (1 - R) / (R - 1 / n): R near 1/n (the binomial noise alone) means the text
explains the outcomes and w is large; R near 1 means it explains nothing and w is small. The sums
forget with ``auto_decay`` per step, so w follows an estimator that improves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from recipe.depo.selectors.base import register_selector
from recipe.depo.selectors.config import HybridConfig
from recipe.depo.selectors.posterior import BetaHistory

# A prediction of exactly 0 or 1 would make the prior improper (a zero Beta parameter).
_EDGE = 1e-4


@register_selector("hybrid")
class HybridSelector(BetaHistory):
    config: HybridConfig
    needs_estimator = True

    def __init__(
        self, config: HybridConfig | None = None, window: tuple[float, float] = (0.15, 0.85), seed: int = 0
    ) -> None:
        super().__init__(config or HybridConfig(), window, seed)
        # Predictions made at decision time, until the prompt's outcome arrives (auto weight):
        # prompt id -> [prediction, the update count when it was made].
        self.pending: dict[str, list] = {}
        # Forgetful sums of (m - q)^2 and q (1 - q) over labelled groups (their n: group_size).
        self.moments = [0.0, 0.0]

    @property
    def prior_weight(self) -> float:
        cfg = self.config
        if cfg.prior_weight != "auto":
            return float(cfg.prior_weight)
        squared, spread = self.moments
        if spread <= 0.0 or self.group_size < 1:
            return cfg.max_prior_weight  # no evidence yet; only unseen prompts, which w does not change
        ratio = squared / spread
        floor = 1.0 / self.group_size
        if ratio <= floor:
            return cfg.max_prior_weight
        weight = (1.0 - ratio) / (ratio - floor)
        return float(min(cfg.max_prior_weight, max(cfg.min_prior_weight, weight)))

    def _prior(self, count: int, predictions: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray]:
        q = np.clip(self._predictions(predictions, count), _EDGE, 1.0 - _EDGE)
        w = self.prior_weight
        return w * q, w * (1.0 - q)

    def decide(self, prompt_ids: Sequence[Any], predictions: Sequence[float] | None = None):
        decisions = super().decide(prompt_ids, predictions)
        if self.config.prior_weight == "auto":
            for key, q in zip(self._ids(prompt_ids), np.asarray(predictions, dtype=np.float64).reshape(-1)):
                self.pending[key] = [float(q), self.counters["updates"]]
        return decisions

    def update(self, prompt_ids: Sequence[Any], mean_k: Sequence[float], n: int) -> dict[str, float]:
        ids, values = self._outcomes(prompt_ids, mean_k, n)
        if self.config.prior_weight == "auto":
            squared = spread = 0.0
            for key, value in zip(ids, values):
                entry = self.pending.pop(key, None)
                if entry is not None:
                    squared += (float(value) - entry[0]) ** 2
                    spread += entry[0] * (1.0 - entry[0])
            keep = self.config.auto_decay
            self.moments = [keep * self.moments[0] + squared, keep * self.moments[1] + spread]
            # Decided but never rolled out (rejected, or dropped): forget after one more step.
            done = self.counters["updates"]
            self.pending = {k: v for k, v in self.pending.items() if v[1] >= done}
        metrics = super().update(ids, values, n)
        metrics["prior_weight"] = self.prior_weight
        return metrics

    def _state(self) -> dict:
        return {
            **super()._state(),
            "pending": {k: list(v) for k, v in self.pending.items()},
            "moments": list(self.moments),
        }

    def _load_state(self, state: dict) -> None:
        pending = {str(k): [float(q), int(at)] for k, (q, at) in state["pending"].items()}
        moments = [float(state["moments"][0]), float(state["moments"][1])]
        super()._load_state(state)
        self.pending, self.moments = pending, moments
        if "group_size" not in state:  # saved before BetaHistory kept it: the hybrid's own n then
            self.group_size = int(state["last_n"])
