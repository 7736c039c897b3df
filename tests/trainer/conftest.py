"""The trainer tests' shared fixtures; the helpers live in depo_helpers.py."""

import copy

import pytest
from depo_helpers import make_depo_env


@pytest.fixture(scope="session")
def depo_env(tmp_path_factory):
    """Data files, a tiny encoder, and the composed base config (4 prompts a step, fetches of 3)."""
    return make_depo_env(tmp_path_factory)


@pytest.fixture(scope="module")
def ray_env(depo_env):
    """``depo_env`` with a local Ray cluster and verl's TransferQueue running, for the tests that
    start the estimator worker and write trajectories as verl's agent loop does; shut down after
    the module."""
    import ray
    import transfer_queue as tq

    ray.init(num_cpus=8, include_dashboard=False, ignore_reinit_error=True)
    tq_cfg = copy.deepcopy(depo_env["base"].transfer_queue)
    tq_cfg.backend.SimpleStorage.num_data_storage_units = 1
    tq.init(tq_cfg)
    yield depo_env
    tq.close()
    ray.shutdown()
