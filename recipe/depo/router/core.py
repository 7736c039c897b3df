"""Routing core (paper, Table 3): a query whose predicted accuracy under the small model is >= tau
stays on the small model, the rest go to the large one. The routed system's accuracy is the small
model's accuracy on the queries it kept plus the large model's on the rest.

``route``, ``routed_accuracy``, ``sweep`` (one set) and ``table3`` (several sets, the paper's layout)
are pure numpy so they can be checked exactly;
``DifficultyRouter`` binds them to a trained estimator checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def _as_probabilities(values, name: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers in [0, 1]") from None
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if np.any((array < 0.0) | (array > 1.0)):
        raise ValueError(f"{name} must lie in [0, 1]")
    return array


def check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold!r}")
    return float(threshold)


def route(predicted_accuracy, threshold: float) -> np.ndarray:
    """Boolean mask: True where the query stays on the small model (prediction >= threshold)."""
    check_threshold(threshold)
    return _as_probabilities(predicted_accuracy, "predicted_accuracy") >= threshold


def routed_accuracy(predicted_accuracy, small_accuracy, large_accuracy, threshold: float) -> dict:
    """Accuracy of the routed system at one threshold.

    ``small_accuracy``/``large_accuracy`` are per-query accuracies in [0, 1] (1/0 for a single
    sample, or the mean over k samples for Avg@k).
    """
    small = _as_probabilities(small_accuracy, "small_accuracy")
    large = _as_probabilities(large_accuracy, "large_accuracy")
    on_small = route(predicted_accuracy, threshold)
    if not (len(on_small) == len(small) == len(large)):
        raise ValueError(
            f"length mismatch: predicted_accuracy={len(on_small)}, small_accuracy={len(small)}, "
            f"large_accuracy={len(large)}"
        )
    if len(on_small) == 0:
        raise ValueError("predicted_accuracy is empty")
    per_query = np.where(on_small, small, large)
    return {
        "threshold": float(threshold),
        "accuracy": float(per_query.mean()),
        "n_small": int(on_small.sum()),
        "n_large": int((~on_small).sum()),
        "share_small": float(on_small.mean()),
    }


def sweep(predicted_accuracy, small_accuracy, large_accuracy, thresholds: Sequence[float]) -> list[dict]:
    """Table 3: one row per threshold, plus the two single-model baselines."""
    small = _as_probabilities(small_accuracy, "small_accuracy")
    large = _as_probabilities(large_accuracy, "large_accuracy")
    rows = [
        {
            "setting": "small alone",
            "threshold": None,
            "accuracy": float(small.mean()),
            "n_small": len(small),
            "n_large": 0,
            "share_small": 1.0,
        },
        {
            "setting": "large alone",
            "threshold": None,
            "accuracy": float(large.mean()),
            "n_small": 0,
            "n_large": len(large),
            "share_small": 0.0,
        },
    ]
    for tau in thresholds:
        row = routed_accuracy(predicted_accuracy, small, large, tau)
        rows.append({"setting": f"tau={tau:g}", **row})
    return rows


def table3(
    sets: Mapping[str, tuple], thresholds: Sequence[float], names: tuple[str, str] = ("small", "large")
) -> list[dict]:
    """Table 3 over several evaluation sets at once.

    ``sets``: set name -> ``(predicted_accuracy, small_accuracy, large_accuracy)`` per query. One
    row per setting (the two single models, then each threshold); per set the routed accuracy and
    how many queries stayed on each model, ``avg`` the unweighted mean over sets (Table 1's
    ``Avg``) and ``share_small`` the share of all queries, pooled over sets, kept on the small one.
    Accuracies are fractions.
    """
    thresholds = [check_threshold(t) for t in thresholds]
    if not sets:
        raise ValueError("no evaluation set given")
    checked = {}
    for name, (predicted, small, large) in sets.items():
        predicted = _as_probabilities(predicted, f"{name}: predicted_accuracy")
        small = _as_probabilities(small, f"{name}: small_accuracy")
        large = _as_probabilities(large, f"{name}: large_accuracy")
        if not len(predicted) == len(small) == len(large):
            raise ValueError(
                f"{name}: length mismatch: predicted={len(predicted)}, small={len(small)}, large={len(large)}"
            )
        if len(predicted) == 0:
            raise ValueError(f"{name}: no queries")
        checked[name] = (predicted, small, large)
    total = sum(len(p) for p, _, _ in checked.values())

    def row(setting: str, threshold: float | None, masks: dict[str, np.ndarray]) -> dict:
        per_set = {}
        for name, (_, small, large) in checked.items():
            on_small = masks[name]
            per_set[name] = {
                "accuracy": float(np.where(on_small, small, large).mean()),
                "n_small": int(on_small.sum()),
                "n_large": int((~on_small).sum()),
            }
        return {
            "setting": setting,
            "threshold": threshold,
            "sets": per_set,
            "avg": float(np.mean([v["accuracy"] for v in per_set.values()])),
            "share_small": sum(v["n_small"] for v in per_set.values()) / total,
        }

    rows = [
        row(f"{names[0]} alone", None, {n: np.ones(len(p), dtype=bool) for n, (p, _, _) in checked.items()}),
        row(f"{names[1]} alone", None, {n: np.zeros(len(p), dtype=bool) for n, (p, _, _) in checked.items()}),
    ]
    for tau in thresholds:
        rows.append(row(f"tau={tau:g}", tau, {n: p >= tau for n, (p, _, _) in checked.items()}))
    return rows


class DifficultyRouter:
    """A trained DEPO estimator used as a router: ``route(router.predict(questions), threshold)``."""

    def __init__(self, estimator, threshold: float = 0.5):
        route(np.zeros(0), threshold)  # validates the threshold
        self.estimator = estimator
        self.threshold = threshold

    @classmethod
    def from_checkpoint(cls, path: str, threshold: float = 0.5, device: str = "auto") -> DifficultyRouter:
        """A CheckpointError (one line naming the file) when ``path`` is not a usable checkpoint."""
        from recipe.depo.router.estimator_checkpoint import load_estimator

        return cls(load_estimator(path, device), threshold=threshold)

    def predict(self, questions: list[str]) -> np.ndarray:
        return np.asarray(self.estimator.predict(list(questions)), dtype=np.float64)
