from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_policy() -> str:
    """The CPU demo's warm-started tiny Qwen2 policy (cached in ~/.cache/depo-verl; the e2e tests share it)."""
    from recipe.depo.demo.tiny_policy import ensure_tiny_policy

    return str(ensure_tiny_policy())


@pytest.fixture
def eval_dir(tmp_path) -> Path:
    """Two small arithmetic eval sets in data_prep.eval_sets' layout (one parquet per set)."""
    from data_prep.arithmetic import build_rows
    from data_prep.common import write_parquet_atomic

    folder = tmp_path / "eval"
    write_parquet_atomic(build_rows("test", seed=7, count=6), folder / "easy.parquet")
    write_parquet_atomic(build_rows("test", seed=8, count=5, start_index=100), folder / "hard.parquet")
    return folder
