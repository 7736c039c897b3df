"""Every GPU launcher leaves a reportable run directory: hydra's config.yaml and verl's file-logger
metrics (the CPU demo is run for real by tests/e2e, which checks the files themselves)."""

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GPU_LAUNCHERS = sorted(p.name for p in (REPO / "examples").glob("run_*_qwen*.sh"))


@pytest.fixture
def fake_python(tmp_path):
    """Records the launcher's python argv instead of training."""
    fake = tmp_path / "fake_python"
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$CAPTURE_FILE"\n')
    fake.chmod(0o755)
    return fake


@pytest.mark.parametrize("name", GPU_LAUNCHERS)
def test_gpu_launcher_writes_config_and_metrics_into_its_run_dir(name, fake_python, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "data": {}}\n')  # a previous run, to be kept
    env = {k: v for k, v in os.environ.items() if not k.isupper() or k in ("PATH", "HOME")}
    env.update(PYTHON=str(fake_python), CAPTURE_FILE=str(tmp_path / "args"), RUN_DIR=str(run_dir), DATA_DIR="/d")
    subprocess.run(["bash", str(REPO / "examples" / name)], env=env, check=True, cwd=tmp_path, timeout=60)
    args = (tmp_path / "args").read_text().splitlines()
    assert f"hydra.run.dir={run_dir}" in args and "hydra.output_subdir=." in args
    assert f"++ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH={run_dir}/metrics.jsonl" in args
    logger = next(a for a in args if a.startswith("trainer.logger="))
    assert "file" in logger.split("=", 1)[1].strip("[]").split(","), logger
    # verl truncates metrics.jsonl at start: the earlier run's file was moved aside, not lost
    assert not (run_dir / "metrics.jsonl").exists()
    assert [p.read_text() for p in run_dir.glob("metrics.*.jsonl")] == ['{"step": 1, "data": {}}\n']
