"""The trainer tests' shared fixture; the helpers live in depo_helpers.py."""

import pytest
from depo_helpers import make_depo_env


@pytest.fixture(scope="session")
def depo_env(tmp_path_factory):
    """Data files, a tiny encoder, and the composed base config (4 prompts a step, fetches of 3)."""
    return make_depo_env(tmp_path_factory)
