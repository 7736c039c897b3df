"""fit_calibration / apply_calibration: hand-computed optima of the prior-regularised BCE."""

import math

import numpy as np
import pytest

from recipe.depo.estimator import apply_calibration, fit_calibration


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def test_bias_with_a_negligible_prior_is_the_logit_of_the_mean_label():
    # z = 0 everywhere: sum BCE is minimised where sigmoid(b) = mean(y) = 0.75, i.e. b = ln 3.
    a, b = fit_calibration(np.zeros(4), np.array([1.0, 1.0, 1.0, 0.0]), "bias", prior=1e-9)
    assert a == 1.0
    assert b == pytest.approx(math.log(3.0), abs=1e-6)


def test_bias_prior_pulls_towards_zero_by_hand():
    # Stationarity: 4 (sigmoid(b) - 0.75) + 4 b = 0, i.e. sigmoid(b) + b = 0.75.
    # One Newton step from 0.2 by hand: f(0.2) = 0.549834 + 0.2 - 0.75 = -0.000166,
    # f'(0.2) = 0.549834 * 0.450166 + 1 = 1.247516, so b = 0.2 + 0.000166 / 1.247516 = 0.200133.
    _, b = fit_calibration(np.zeros(4), np.array([1.0, 1.0, 1.0, 0.0]), "bias", prior=4.0)
    assert b == pytest.approx(0.200133, abs=2e-6)
    assert sigmoid(b) + b == pytest.approx(0.75, abs=1e-9)


def test_bias_shifts_with_a_uniform_drift():
    # Labels are the predictions shifted by +1 logit (a policy-wide improvement): b recovers 1.
    z = np.linspace(-3, 3, 41)
    y = np.array([sigmoid(v + 1.0) for v in z])
    a, b = fit_calibration(z, y, "bias", prior=1e-9)
    assert (a, b) == (1.0, pytest.approx(1.0, abs=1e-6))


def test_affine_recovers_temperature_and_bias():
    z = np.linspace(-2, 2, 21)
    y = np.array([sigmoid(2.0 * v + 1.0) for v in z])
    a, b = fit_calibration(z, y, "affine", prior=1e-9)
    assert a == pytest.approx(2.0, abs=1e-5) and b == pytest.approx(1.0, abs=1e-5)


def test_none_and_empty_are_the_identity():
    assert fit_calibration(np.array([1.0, 2.0]), np.array([0.0, 1.0]), "none", prior=1.0) == (1.0, 0.0)
    assert fit_calibration(np.zeros(0), np.zeros(0), "affine", prior=1.0) == (1.0, 0.0)


def test_one_sided_labels_stay_finite():
    # All right: without a prior b would run off to +inf; the prior keeps it finite and positive.
    a, b = fit_calibration(np.zeros(8), np.ones(8), "bias", prior=1.0)
    assert math.isfinite(b) and b > 1.0
    a, b = fit_calibration(np.linspace(-1, 1, 8), np.zeros(8), "affine", prior=1.0)
    assert math.isfinite(a) and math.isfinite(b) and b < 0


@pytest.mark.parametrize(
    "args,match",
    [
        ((np.zeros(2), np.zeros(2), "temperature", 1.0), "mode"),
        ((np.zeros(2), np.zeros(2), "bias", 0.0), "prior"),
        ((np.zeros(2), np.zeros(3), "bias", 1.0), "shapes"),
        ((np.array([0.0, np.nan]), np.zeros(2), "bias", 1.0), "NaN"),
    ],
)
def test_bad_input_is_named(args, match):
    with pytest.raises(ValueError, match=match):
        fit_calibration(*args)


def test_apply_by_hand():
    p = apply_calibration(np.array([0.5, -1.0]), 2.0, 1.0)
    assert p.dtype == np.float32
    np.testing.assert_allclose(p, [sigmoid(2.0), sigmoid(-1.0)], atol=1e-7)
