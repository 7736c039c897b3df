"""A scorer that checks itself: how the filter's decisions matched the groups' outcomes.

Three users of one bookkeeping (pure Python, its state JSON in the DEPO checkpoint):

* **shadow** (``depo.filter.mode=shadow``): every prompt is rolled out (the batch is verl's own),
  and the selector's decision of what it *would* reject is compared with the outcome: precision
  (of the would-be rejections, the share whose group had zero advantage) and recall (of the
  zero-advantage groups, the share it would have rejected), ``depo/shadow/*``.
* **audit** (filtering on, ``explore_rate > 0``): the prompts rolled out despite a rejection are
  an unbiased sample of what the filter rejects; the share of them whose group had non-zero
  advantage is the live false-rejection rate, beside the same share among the kept groups,
  ``depo/audit/*``.
* **drift guard** (``depo.filter.guard_threshold > 0``): when the calibration error of the
  predictions over the last ``guard_steps`` steps' groups passes the threshold, the filter rolls
  out everything (reason ``guard``) until the error is back under it, ``depo/guard_active``.

A group has zero advantage when all its rollouts scored alike: mean@k within half a rollout of 0
or 1 (the same test the selectors use). Calibration error is the expected calibration error over
ten equal-width bins of the prediction: the mean, weighted by bin size, of |mean prediction -
mean outcome| per bin.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from recipe.depo.selectors.base import zero_variance

BINS = 10


def zero_advantage(mean_k: Sequence[float], n: int) -> np.ndarray:
    right, wrong = zero_variance(np.asarray(mean_k, dtype=np.float64), n)
    return right | wrong


def calibration_error(predictions: Sequence[float], outcomes: Sequence[float]) -> float:
    """Expected calibration error over ``BINS`` equal-width bins; NaN without any group."""
    p = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(outcomes, dtype=np.float64)
    if p.size == 0:
        return float("nan")
    bins = np.minimum((p * BINS).astype(int), BINS - 1)
    error = 0.0
    for b in np.unique(bins):
        in_bin = bins == b
        error += in_bin.sum() * abs(p[in_bin].mean() - y[in_bin].mean())
    return float(error / p.size)


def _share(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else float("nan")


# Cumulative counts (checkpointed): shadow's confusion matrix, the audit's two samples.
_COUNTS = (
    "shadow_groups",
    "shadow_rejected_zero",  # would reject, zero advantage (a right rejection)
    "shadow_rejected_useful",  # would reject, non-zero advantage (a false rejection)
    "shadow_kept_zero",  # would keep, zero advantage (a miss)
    "audit_explored",
    "audit_explored_useful",
    "audit_kept",
    "audit_kept_useful",
    "guard_steps_active",
)


class SelectionAudit:
    def __init__(self, guard_threshold: float = 0.0, guard_steps: int = 10) -> None:
        self.guard_threshold = float(guard_threshold)
        self.guard_steps = int(guard_steps)
        self.counts = {name: 0 for name in _COUNTS}
        # The last guard_steps steps' (predictions, outcomes) of the rolled-out groups.
        self.recent: deque[tuple[list[float], list[float]]] = deque(maxlen=max(1, self.guard_steps))
        self.guard_active = False

    @property
    def guard_enabled(self) -> bool:
        return self.guard_threshold > 0.0 and self.guard_steps > 0

    def shadow(self, would_reject: Sequence[bool], mean_k: Sequence[float], n: int) -> dict[str, float]:
        """One step of shadow decisions against the outcomes of the same (all rolled-out) groups."""
        reject = np.asarray(would_reject, dtype=bool)
        zero = zero_advantage(mean_k, n)
        step = {
            "rejected_zero": int((reject & zero).sum()),
            "rejected_useful": int((reject & ~zero).sum()),
            "kept_zero": int((~reject & zero).sum()),
        }
        c = self.counts
        c["shadow_groups"] += len(reject)
        for key, value in step.items():
            c[f"shadow_{key}"] += value
        total_rejected = c["shadow_rejected_zero"] + c["shadow_rejected_useful"]
        return {
            "depo/shadow/would_reject": float(reject.mean()) if len(reject) else float("nan"),
            "depo/shadow/precision": _share(step["rejected_zero"], step["rejected_zero"] + step["rejected_useful"]),
            "depo/shadow/recall": _share(step["rejected_zero"], step["rejected_zero"] + step["kept_zero"]),
            "depo/shadow/rollouts_would_save": float(n * reject.sum()),
            "depo/shadow/precision_total": _share(c["shadow_rejected_zero"], total_rejected),
            "depo/shadow/recall_total": _share(
                c["shadow_rejected_zero"], c["shadow_rejected_zero"] + c["shadow_kept_zero"]
            ),
            "depo/shadow/would_reject_total": _share(total_rejected, c["shadow_groups"]),
        }

    def rejections(self, explored: Sequence[bool], kept: Sequence[bool], mean_k: Sequence[float], n: int):
        """The audit of one filtered step: ``explored`` marks the groups rolled out despite a
        rejection, ``kept`` those the selector kept (neither: warm-up, guard, fill)."""
        explored, kept = np.asarray(explored, dtype=bool), np.asarray(kept, dtype=bool)
        useful = ~zero_advantage(mean_k, n)
        c = self.counts
        c["audit_explored"] += int(explored.sum())
        c["audit_explored_useful"] += int((explored & useful).sum())
        c["audit_kept"] += int(kept.sum())
        c["audit_kept_useful"] += int((kept & useful).sum())
        return {
            "depo/audit/explored_groups": float(explored.sum()),
            "depo/audit/false_rejection_rate": _share(int((explored & useful).sum()), int(explored.sum())),
            "depo/audit/kept_useful_rate": _share(int((kept & useful).sum()), int(kept.sum())),
            "depo/audit/false_rejection_rate_total": _share(c["audit_explored_useful"], c["audit_explored"]),
            "depo/audit/kept_useful_rate_total": _share(c["audit_kept_useful"], c["audit_kept"]),
        }

    def calibration(self, predictions: Sequence[float], mean_k: Sequence[float]) -> dict[str, float]:
        """This step's calibration error, the one over the last ``guard_steps`` steps, and the
        guard's state for the *next* step (on when that error passes the threshold)."""
        self.recent.append(([float(p) for p in predictions], [float(y) for y in mean_k]))
        window_p = [p for preds, _ in self.recent for p in preds]
        window_y = [y for _, ys in self.recent for y in ys]
        recent_error = calibration_error(window_p, window_y)
        if self.guard_enabled:
            self.guard_active = bool(np.isfinite(recent_error) and recent_error > self.guard_threshold)
        return {
            "depo/calib_error": calibration_error(predictions, mean_k),
            "depo/calib_error_recent": recent_error,
        }

    def count_guard_step(self, active: bool) -> None:
        self.counts["guard_steps_active"] += int(active)

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict:
        return {
            "counts": dict(self.counts),
            "recent": [[list(p), list(y)] for p, y in self.recent],
            "guard_active": self.guard_active,
        }

    def load_state_dict(self, state: dict) -> None:
        counts = {name: int(state["counts"].get(name, 0)) for name in _COUNTS}
        recent = deque(
            ([float(v) for v in p], [float(v) for v in y]) for p, y in state["recent"][-self.recent.maxlen :]
        )
        recent = deque(recent, maxlen=self.recent.maxlen)
        guard_active = bool(state["guard_active"]) and self.guard_enabled
        self.counts, self.recent, self.guard_active = counts, recent, guard_active
