"""Online calibration of the estimator's score logits: p = sigmoid(a * z + b) (pure numpy).

The encoder learns slowly (small learning rate, one step per RL step); the policy's accuracy
drifts every step. A two-parameter map refitted after every update on the latest labels follows a
policy-wide shift at once, while the encoder keeps learning which prompts are harder than others.

The fit minimises the summed soft-label BCE plus ``prior / 2 * ((a - 1)^2 + b^2)``: with few or
one-sided labels the map stays near the identity instead of running off to infinity.
"""

from __future__ import annotations

import math

import numpy as np

MODES = ("none", "bias", "affine")
IDENTITY = (1.0, 0.0)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _objective(a: float, b: float, z: np.ndarray, y: np.ndarray, prior: float) -> float:
    s = a * z + b
    # softplus(s) - y * s is BCE-with-logits for a soft label y; logaddexp keeps it finite.
    return float(np.sum(np.logaddexp(0.0, s) - y * s) + 0.5 * prior * ((a - 1.0) ** 2 + b**2))


def fit_calibration(
    logits: np.ndarray,
    labels: np.ndarray,
    mode: str,
    prior: float,
    max_iter: int = 50,
    tol: float = 1e-10,
) -> tuple[float, float]:
    """(a, b) minimising sum BCE(sigmoid(a z + b), y) + prior/2 ((a-1)^2 + b^2).

    ``mode``: "bias" keeps a = 1, "affine" fits both, "none" returns the identity. Damped Newton
    (the objective is strictly convex for prior > 0), so the result is the unique minimiser.
    """
    if mode not in MODES:
        raise ValueError(f"calibration mode must be one of {MODES}, got {mode!r}")
    if not prior > 0:
        raise ValueError(f"calibration prior must be > 0, got {prior!r}")
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if z.shape != y.shape or z.ndim != 1:
        raise ValueError(f"logits {z.shape} and labels {y.shape} must be equal 1-D shapes")
    if mode == "none" or z.size == 0:
        return IDENTITY
    if not (np.all(np.isfinite(z)) and np.all(np.isfinite(y))):
        raise ValueError("calibration data contains NaN or inf")
    a, b = IDENTITY
    value = _objective(a, b, z, y, prior)
    for _ in range(max_iter):
        p = _sigmoid(a * z + b)
        r = p - y
        w = p * (1.0 - p)
        g_b = r.sum() + prior * b
        h_bb = w.sum() + prior
        if mode == "bias":
            step = np.array([0.0, g_b / h_bb])
        else:
            g_a = (r * z).sum() + prior * (a - 1.0)
            h_aa = (w * z * z).sum() + prior
            h_ab = (w * z).sum()
            step = np.linalg.solve(np.array([[h_aa, h_ab], [h_ab, h_bb]]), np.array([g_a, g_b]))
        # Backtracking: Newton can overshoot where the BCE is nearly flat (labels all 0 or 1).
        t = 1.0
        while t > 1e-8:
            a_new, b_new = a - t * step[0], b - t * step[1]
            new_value = _objective(a_new, b_new, z, y, prior)
            if new_value <= value:
                break
            t *= 0.5
        else:
            break
        a, b, value = a_new, b_new, new_value
        if float(np.abs(t * step).max()) < tol:
            break
    if not (math.isfinite(a) and math.isfinite(b)):
        return IDENTITY
    return float(a), float(b)


def apply_calibration(logits: np.ndarray, a: float, b: float) -> np.ndarray:
    """Calibrated probabilities, float32."""
    z = np.asarray(logits, dtype=np.float64)
    return _sigmoid(a * z + b).astype(np.float32)
