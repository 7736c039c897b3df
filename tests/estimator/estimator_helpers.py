"""Shared by the estimator tests: a small paper estimator on the tiny encoder, parameter snapshots."""

import numpy as np
import torch

from recipe.depo.estimator import EstimatorConfig, OnlineEstimator

# One labelled step: prompts of spread-out difficulty, their mean@k and mean response log-prob.
PROMPTS = [
    "What is 1 + 2?",
    "Compute 123 * 456 - 789.",
    "Find the remainder when 98765 is divided by 37.",
    "What is 7?",
    "Let x = 3. What is x * x + 2 * x + 1?",
    "Evaluate 12 - 5 + 8 - 3 + 44 - 17.",
    "How many primes are less than 100?",
    "Solve 2x + 3 = 11.",
]
MEAN_K = np.array([1.0, 0.25, 0.125, 1.0, 0.625, 0.5, 0.375, 0.875], dtype=np.float32)
LOGPROB = np.array([-0.05, -1.2, -2.0, -0.01, -0.4, -0.6, -0.9, -0.1], dtype=np.float32)


def make(backbone, **overrides):
    values = {"backbone": backbone, "hidden_dims": (16,), "micro_batch_size": 3, "predict_batch_size": 3}
    values.update(overrides)
    return OnlineEstimator(EstimatorConfig.paper(**values))


def params(est):
    return {k: v.detach().clone() for k, v in est.model.state_dict().items()}


def assert_same_params(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        if atol == 0.0:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)
