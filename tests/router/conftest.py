"""Fixtures of the serving tests: a real (tiny) estimator checkpoint and two real OpenAI-compatible
table backends, served by uvicorn on 127.0.0.1 in background threads."""

from __future__ import annotations

import pytest
from router_helpers import EASY, HARD, serving


@pytest.fixture(scope="session")
def estimator_checkpoint(tmp_path_factory) -> str:
    """A tiny-encoder estimator trained for 30 steps on EASY (label 1) and HARD (label 0), saved."""
    import torch

    from recipe.depo.estimator import EstimatorConfig, OnlineEstimator, build_tiny_encoder

    root = tmp_path_factory.mktemp("router_estimator")
    backbone = build_tiny_encoder(str(root / "encoder"), dropout=0.0)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        estimator = OnlineEstimator(EstimatorConfig(backbone=backbone, hidden_dims=[16], dropout=0.0, lr=1e-2))
        for _ in range(30):
            estimator.update(EASY + HARD, [1.0] * len(EASY) + [0.0] * len(HARD))
    finally:
        torch.set_num_threads(previous)
    return estimator.save(str(root / "ckpt"))


@pytest.fixture(scope="session")
def estimator(estimator_checkpoint):
    from recipe.depo.router.serve import load_estimator

    return load_estimator(estimator_checkpoint, device="cpu")


@pytest.fixture(autouse=True)
def _single_torch_thread():
    """One intra-op thread: the tiny encoder gains nothing from more on this shared 2-core box."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def backends():
    """Two table backends with distinct model ids: (small app, small url, large app, large url)."""
    from recipe.depo.router.table_backend import create_app

    small, large = create_app("small", model="small-model"), create_app("large", model="large-model")
    with serving(small) as small_url, serving(large) as large_url:
        yield {"small": small, "large": large, "small_url": small_url, "large_url": large_url}
