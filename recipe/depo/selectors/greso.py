"""GRESO (arXiv 2506.02177): skip a prompt whose recent groups all had zero variance.

Per prompt: ``z``, how many of its latest groups in a row were all right or all wrong, and the
kind of the latest one (easy: all right; hard: all wrong). A candidate with ``z = 0`` (unseen,
or its latest group had a gradient) is always kept; one with ``z > 0`` is skipped with
probability ``1 - p^z`` where ``p`` is its kind's exploration probability, so a prompt that stays
uninformative is skipped more and more surely, but never for certain while ``p >= p_min > 0``.

``p_easy`` and ``p_hard`` adapt after every step to the step's groups: a kind whose share reached
its target (``target_zero_variance`` split one third easy, two thirds hard) gets a lower ``p``
(skip more), otherwise a higher one. The authors' code starts adapting from the second pass over
the data, when skipping first becomes possible; a selector does not see passes, so here ``p``
adapts only after steps in which some candidate had a zero-variance history (before that, no
``p`` has any effect and drifting it to a bound would only be a surprise for later).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from recipe.depo.selectors.base import Decisions, Selector, finite_float, register_selector, zero_variance
from recipe.depo.selectors.config import GresoConfig

EASY, HARD = "easy", "hard"


@register_selector("greso")
class GresoSelector(Selector):
    config: GresoConfig

    def __init__(self, config: GresoConfig | None = None, window: tuple[float, float] = (0.15, 0.85), seed: int = 0):
        super().__init__(config or GresoConfig(), window, seed)
        self.p = {EASY: self.config.p_easy, HARD: self.config.p_hard}
        # prompt id -> [z, kind of the latest zero-variance group or None, latest mean@k]
        self.history: dict[str, list] = {}
        self._skipping_possible = False
        self.counters = {"decided": 0, "skipped": 0, "updates": 0, "adaptations": 0}

    def skip_probability(self, prompt_id: Any) -> float:
        z, kind, _ = self.history.get(str(prompt_id), (0, None, None))
        return 0.0 if z == 0 else 1.0 - self.p[kind] ** z

    def decide(self, prompt_ids: Sequence[Any], predictions: Sequence[float] | None = None) -> Decisions:
        ids = self._ids(prompt_ids)
        keep = np.ones(len(ids), dtype=bool)
        score = np.full(len(ids), self.centre)
        for j, key in enumerate(ids):
            entry = self.history.get(key)
            if entry is None:
                continue
            z, kind, last = entry
            score[j] = last
            if z > 0:
                self._skipping_possible = True
                # One uniform draw per candidate with a zero-variance history, in input order.
                keep[j] = self.rng.random() >= 1.0 - self.p[kind] ** z
        self.counters["decided"] += len(ids)
        self.counters["skipped"] += int((~keep).sum())
        return Decisions(keep=keep, score=score)

    def update(self, prompt_ids: Sequence[Any], mean_k: Sequence[float], n: int) -> dict[str, float]:
        ids, values = self._outcomes(prompt_ids, mean_k, n)
        all_right, all_wrong = zero_variance(values, n)
        for key, value, right, wrong in zip(ids, values, all_right, all_wrong):
            z, kind, _ = self.history.get(key, (0, None, None))
            if right or wrong:
                new_kind = EASY if right else HARD
                # A streak counts consecutive zero-variance groups of either kind; the kind of
                # the latest one decides which exploration probability applies.
                self.history[key] = [z + 1, new_kind, float(value)]
            else:
                self.history[key] = [0, None, float(value)]
        easy_share = float(all_right.mean()) if len(ids) else 0.0
        hard_share = float(all_wrong.mean()) if len(ids) else 0.0
        adapted = 0.0
        if self._skipping_possible and len(ids):
            cfg = self.config
            targets = {
                EASY: cfg.target_zero_variance * cfg.easy_share_of_target,
                HARD: cfg.target_zero_variance * (1.0 - cfg.easy_share_of_target),
            }
            for kind, share in ((EASY, easy_share), (HARD, hard_share)):
                step = -cfg.p_step if share >= targets[kind] else cfg.p_step
                self.p[kind] = float(min(cfg.p_max, max(cfg.p_min, self.p[kind] + step)))
            self.counters["adaptations"] += 1
            adapted = 1.0
        self._skipping_possible = False
        self.counters["updates"] += 1
        return {
            "easy_share": easy_share,
            "hard_share": hard_share,
            "p_easy": self.p[EASY],
            "p_hard": self.p[HARD],
            "adapted": adapted,
            "tracked_prompts": float(len(self.history)),
        }

    def _state(self) -> dict:
        return {
            "p": dict(self.p),
            "history": {k: list(v) for k, v in self.history.items()},
            "skipping_possible": self._skipping_possible,
            "counters": dict(self.counters),
        }

    def _load_state(self, state: dict) -> None:
        p = {kind: finite_float(state["p"][kind], f"p[{kind}]") for kind in (EASY, HARD)}
        history = {}
        for key, (z, kind, last) in state["history"].items():
            if kind not in (EASY, HARD, None) or int(z) < 0 or (int(z) > 0) != (kind is not None):
                raise ValueError(f"greso selector state: bad history entry for prompt {key!r}: {[z, kind, last]!r}")
            history[str(key)] = [int(z), kind, finite_float(last, f"history[{key!r}]")]
        counters = {name: int(state["counters"].get(name, 0)) for name in self.counters}
        self.p, self.history, self.counters = p, history, counters
        self._skipping_possible = bool(state["skipping_possible"])
