"""A Beta posterior of each prompt's success rate, Thompson-sampled (MoPPS, arXiv 2507.04632).

Per prompt the decayed outcome counts ``S`` and ``F`` (successes and failures over its groups):
a labelled group of n rollouts with mean@k m makes them ``S <- decay * S + m n`` and
``F <- decay * F + (1 - m) n``. The posterior is Beta(prior_alpha + S, prior_beta + F), which is
MoPPS's recursive update ``alpha <- decay * alpha + (1 - decay) * prior_alpha + successes``
unrolled. A candidate's score is a draw from its posterior (``decision: thompson``, MoPPS) or its
posterior mean (``mean``); it is kept when the score lies in the filter's window, and the fill
completes a batch with the scores closest to ``target``. An unseen prompt's posterior is the
prior alone (Beta(1, 1): uniform), so before a prompt repeats this selector is a random one.

``decision: useful`` keeps a candidate only when the share of useful groups (not all right, not
all wrong) its posterior expects, 1 - E[p^n] - E[(1 - p)^n] for groups of n, is at least that of
a prompt known to sit at the window's edge, and its mean lies in the window. For a posterior
pinned to one value this is the window on the mean; a wide one (a prompt seen little, or a prior
worth little) near an edge is rejected, since much of its mass lies where groups come out all
right or all wrong. The mean is the score the fill ranks by. n is the group size of the last
update; before the first one the decision is the mean's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from recipe.depo.selectors.base import Decisions, Selector, finite_float, register_selector
from recipe.depo.selectors.config import PosteriorConfig


def useful_share(alpha: np.ndarray, beta: np.ndarray, n: int) -> np.ndarray:
    """1 - E[p^n] - E[(1 - p)^n] under Beta(alpha, beta): the chance that a group of n rollouts is
    neither all right nor all wrong. E[p^n] = prod_{i<n} (alpha + i) / (alpha + beta + i)."""
    alpha, beta = np.asarray(alpha, dtype=np.float64), np.asarray(beta, dtype=np.float64)
    i = np.arange(n, dtype=np.float64)
    total = (alpha + beta)[..., None] + i
    all_right = np.prod((alpha[..., None] + i) / total, axis=-1)
    all_wrong = np.prod((beta[..., None] + i) / total, axis=-1)
    return 1.0 - all_right - all_wrong


def edge_useful_share(window: tuple[float, float], n: int) -> float:
    """The useful-group share of a prompt known to sit at the window's edge (the lower of the
    two edges'): the bar of ``decision: useful``, 1 - x^n - (1 - x)^n at x = low or high."""
    return min(1.0 - x**n - (1.0 - x) ** n for x in window)


class BetaHistory(Selector):
    """The per-prompt decayed counts and the decision from a Beta(alpha, beta) per candidate;
    subclasses say where the prior comes from."""

    def __init__(self, config, window: tuple[float, float] = (0.15, 0.85), seed: int = 0) -> None:
        super().__init__(config, window, seed)
        # prompt id -> [decayed successes, decayed failures]
        self.counts: dict[str, list[float]] = {}
        self.counters = {"decided": 0, "kept": 0, "updates": 0}
        # rollouts per group in the last update: the n of ``decision: useful`` (0: none yet)
        self.group_size = 0

    @property
    def centre(self) -> float:
        return self.config.target

    def _prior(self, count: int, predictions: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def posterior(
        self, prompt_ids: Sequence[Any], predictions: Sequence[float] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(alpha, beta) per prompt, in input order."""
        ids = self._ids(prompt_ids)
        alpha, beta = self._prior(len(ids), predictions)
        for j, key in enumerate(ids):
            entry = self.counts.get(key)
            if entry is not None:
                alpha[j] += entry[0]
                beta[j] += entry[1]
        return alpha, beta

    def decide(self, prompt_ids: Sequence[Any], predictions: Sequence[float] | None = None) -> Decisions:
        alpha, beta = self.posterior(prompt_ids, predictions)
        if self.config.decision == "thompson":
            # One vectorised draw per call, in input order: the same candidates in the same order
            # give the same samples from the same RNG state.
            score = self.rng.beta(alpha, beta) if len(alpha) else np.zeros(0)
        else:
            score = alpha / (alpha + beta)
        keep = self.in_window(score)
        if self.config.decision == "useful" and self.group_size > 0 and len(alpha):
            keep &= useful_share(alpha, beta, self.group_size) >= edge_useful_share(self.window, self.group_size)
        self.counters["decided"] += len(keep)
        self.counters["kept"] += int(keep.sum())
        return Decisions(keep=keep, score=score)

    def update(self, prompt_ids: Sequence[Any], mean_k: Sequence[float], n: int) -> dict[str, float]:
        ids, values = self._outcomes(prompt_ids, mean_k, n)
        decay = self.config.decay
        for key, value in zip(ids, values):
            s, f = self.counts.get(key, (0.0, 0.0))
            self.counts[key] = [decay * s + float(value) * n, decay * f + (1.0 - float(value)) * n]
        self.counters["updates"] += 1
        self.group_size = int(n)
        return {"tracked_prompts": float(len(self.counts))}

    def _state(self) -> dict:
        return {
            "counts": {k: list(v) for k, v in self.counts.items()},
            "counters": dict(self.counters),
            "group_size": self.group_size,
        }

    def _load_state(self, state: dict) -> None:
        counts = {}
        for key, (s, f) in state["counts"].items():
            s, f = finite_float(s, f"counts[{key!r}]"), finite_float(f, f"counts[{key!r}]")
            if s < 0 or f < 0:
                raise ValueError(f"{self.name} selector state: negative counts for prompt {key!r}")
            counts[str(key)] = [s, f]
        counters = {name: int(state["counters"].get(name, 0)) for name in self.counters}
        # absent from states saved before ``decision: useful`` existed; they decided by the mean
        group_size = int(state.get("group_size", 0))
        self.counts, self.counters, self.group_size = counts, counters, group_size


@register_selector("posterior")
class PosteriorSelector(BetaHistory):
    config: PosteriorConfig

    def __init__(
        self, config: PosteriorConfig | None = None, window: tuple[float, float] = (0.15, 0.85), seed: int = 0
    ) -> None:
        super().__init__(config or PosteriorConfig(), window, seed)

    def _prior(self, count: int, predictions: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray]:
        return np.full(count, self.config.prior_alpha), np.full(count, self.config.prior_beta)
