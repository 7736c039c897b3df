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


def test_cpu_smoke_runner_points_the_launcher_run_dir_at_its_out_dir(tmp_path):
    """run_gpu_launcher_on_cpu.sh (the slow test's runner) must leave config and metrics in OUT_DIR, where
    the slow test and the report look. The vLLM venv is faked: its python answers the environment check
    and records main_depo's argv; data, model and encoder paths are given so nothing else runs."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    fake = venv / "bin" / "python"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        'case " $* " in\n'
        '  *" recipe.depo.cpu.vllm_env check "*) exit 0 ;;\n'
        '  *" recipe.depo.main_depo "*) printf "%s\\n" "$@" > "$CAPTURE_FILE" ;;\n'
        '  *) echo "unexpected python call: $*" >&2; exit 3 ;;\n'
        "esac\n"
    )
    fake.chmod(0o755)
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.parquet").touch()
    (data / "val.parquet").touch()
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.isupper() or k in ("PATH", "HOME")}
    env.update(
        VLLM_VENV=str(venv),
        CAPTURE_FILE=str(tmp_path / "args"),
        OUT_DIR=str(out),
        DATA_DIR=str(data),
        MODEL="/m",
        EST_BACKBONE="/e",
    )
    launcher = REPO / "examples" / "run_depo_qwen7b.sh"
    subprocess.run(
        ["bash", str(REPO / "examples" / "run_gpu_launcher_on_cpu.sh"), str(launcher)],
        env=env,
        check=True,
        cwd=tmp_path,
        timeout=60,
        capture_output=True,
    )
    args = (tmp_path / "args").read_text().splitlines()
    assert f"hydra.run.dir={out}" in args
    assert f"++ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH={out}/metrics.jsonl" in args
    assert f"trainer.default_local_dir={out}/checkpoints" in args
    assert "+config=cpu_vllm" in args and "trainer.total_training_steps=2" in args
