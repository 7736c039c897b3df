"""Online calibration of the estimator's score logits: p = sigmoid(a * z + b) (pure numpy).

The encoder learns slowly (small learning rate, one step per RL step); the policy's accuracy
drifts every step. A two-parameter map refitted after every update on the latest labels follows a
policy-wide shift at once, while the encoder keeps learning which prompts are harder than others.

Early on, and whenever the learning rate is small, the encoder *ranks* prompts well long before
its logits have the right scale (Adam moves each weight by about the learning rate per step, so
the spread of the logits grows slowly): predictions then sit in a narrow band around the mean and
the window filter keeps almost everything. The affine map restores the scale at once.

"bias" (a = 1) minimises the summed soft-label BCE plus ``prior / 2 * b^2``. "affine" fits in
standardised units: with u = (z - mean z) / sd z over the fitted prompts, it fits
sigmoid(alpha u + beta) under ``prior / 2 * ((alpha - sd z)^2 + (beta - mean z)^2)``, a pull
towards the identity map whose strength does not depend on the scale of the logits (a prior on a
itself would forbid exactly the large slopes a narrow band of logits needs). With few or
one-sided labels the map stays near the identity instead of running off to infinity.
"""

from __future__ import annotations

import math

import numpy as np

MODES = ("none", "bias", "affine")
IDENTITY = (1.0, 0.0)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _objective(a: float, b: float, z: np.ndarray, y: np.ndarray, prior: float, centre: tuple[float, float]) -> float:
    s = a * z + b
    # softplus(s) - y * s is BCE-with-logits for a soft label y; logaddexp keeps it finite.
    penalty = (a - centre[0]) ** 2 + (b - centre[1]) ** 2
    return float(np.sum(np.logaddexp(0.0, s) - y * s) + 0.5 * prior * penalty)


def fit_calibration(
    logits: np.ndarray,
    labels: np.ndarray,
    mode: str,
    prior: float,
    max_iter: int = 50,
    tol: float = 1e-10,
) -> tuple[float, float]:
    """(a, b) of the map sigmoid(a z + b) fitted to soft labels (see the module docstring).

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
    mean, sd = float(z.mean()), float(z.std())
    if mode == "affine" and sd > 1e-12:
        alpha, beta = _newton((z - mean) / sd, y, "affine", prior, (sd, mean), max_iter, tol)
        a, b = alpha / sd, beta - alpha * mean / sd
    else:
        # Constant logits carry no slope to fit (e.g. the zero-initialised head's first step).
        a, b = _newton(z, y, "bias", prior, IDENTITY, max_iter, tol)
    if not (math.isfinite(a) and math.isfinite(b)):
        return IDENTITY
    return float(a), float(b)


def _newton(
    z: np.ndarray, y: np.ndarray, mode: str, prior: float, centre: tuple[float, float], max_iter: int, tol: float
) -> tuple[float, float]:
    """Minimise sum BCE(sigmoid(a z + b), y) + prior/2 ((a - c_a)^2 + (b - c_b)^2), from the centre
    (a fixed at c_a in "bias" mode)."""
    a, b = centre
    value = _objective(a, b, z, y, prior, centre)
    for _ in range(max_iter):
        p = _sigmoid(a * z + b)
        r = p - y
        w = p * (1.0 - p)
        g_b = r.sum() + prior * (b - centre[1])
        h_bb = w.sum() + prior
        if mode == "bias":
            step = np.array([0.0, g_b / h_bb])
        else:
            g_a = (r * z).sum() + prior * (a - centre[0])
            h_aa = (w * z * z).sum() + prior
            h_ab = (w * z).sum()
            step = np.linalg.solve(np.array([[h_aa, h_ab], [h_ab, h_bb]]), np.array([g_a, g_b]))
        # Backtracking: Newton can overshoot where the BCE is nearly flat (labels all 0 or 1).
        t = 1.0
        while t > 1e-8:
            a_new, b_new = a - t * step[0], b - t * step[1]
            new_value = _objective(a_new, b_new, z, y, prior, centre)
            if new_value <= value:
                break
            t *= 0.5
        else:
            break
        a, b, value = a_new, b_new, new_value
        if float(np.abs(t * step).max()) < tol:
            break
    return a, b


def apply_calibration(logits: np.ndarray, a: float, b: float) -> np.ndarray:
    """Calibrated probabilities, float32."""
    z = np.asarray(logits, dtype=np.float64)
    return _sigmoid(a * z + b).astype(np.float32)
