"""The estimator worker hands its update's cached GPU blocks back after every update (issue 21).

CUDA is the system edge here: torch.cuda.empty_cache is replaced by a counter, and the estimator
by a stand-in whose device says cuda. On a GPU the same path runs for real."""

import numpy as np
import pytest
import torch

from recipe.depo.workers.estimator_worker import DifficultyEstimatorWorker, release_cached_memory


@pytest.fixture
def empty_cache_calls(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append(1))
    return calls


def test_release_cached_memory_only_on_cuda(empty_cache_calls):
    release_cached_memory(torch.device("cpu"))
    assert empty_cache_calls == []
    release_cached_memory(torch.device("cuda", 0))
    assert empty_cache_calls == [1]


class _Estimator:
    device = torch.device("cuda", 0)

    def __init__(self, fail: bool):
        self.fail = fail

    def update(self, prompts, mean_k, avg_logprob):
        if self.fail:
            raise ValueError("mean_k: bad labels")
        return {"num_updates": 1.0}


@pytest.mark.parametrize("fail", [False, True])
def test_update_releases_memory_also_when_it_fails(empty_cache_calls, fail):
    worker = object.__new__(DifficultyEstimatorWorker)  # no Ray: the method alone
    worker.estimator = _Estimator(fail)
    args = (["1 + 1?"], np.array([0.5], dtype=np.float32), None)
    if fail:
        with pytest.raises(ValueError, match="mean_k"):
            DifficultyEstimatorWorker.update(worker, *args)
    else:
        assert DifficultyEstimatorWorker.update(worker, *args) == {"num_updates": 1.0}
    assert empty_cache_calls == [1]
