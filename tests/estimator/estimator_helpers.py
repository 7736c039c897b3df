"""Shared by the estimator tests: a small paper estimator on the tiny encoder, parameter snapshots."""

import torch

from recipe.depo.estimator import EstimatorConfig, OnlineEstimator


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
