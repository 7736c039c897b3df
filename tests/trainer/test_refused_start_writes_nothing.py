"""A start that main_depo refuses, launched the way the launchers launch it
(``hydra.run.dir=$RUN_DIR hydra.output_subdir=.``), writes nothing into the run directory: a
finished run's config.yaml, hydra.yaml and overrides.yaml stay as they were (the report reads
config.yaml), and a run directory that did not exist is not created. A start that passes still
gets hydra's files."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import recipe.depo
from data_prep.arithmetic import build as build_arithmetic

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = os.path.join(os.path.dirname(recipe.depo.__file__), "config")
FINISHED = ("config.yaml", "hydra.yaml", "overrides.yaml", "main_depo.log", "metrics.jsonl")


def _start(run_dir: Path, *overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    launch = ["-m", "recipe.depo.main_depo", f"hydra.run.dir={run_dir}", "hydra.output_subdir=."]
    return subprocess.run(
        [sys.executable, *launch, *overrides],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def _finished_run(run_dir: Path) -> dict[str, bytes]:
    run_dir.mkdir()
    for name in FINISHED:
        (run_dir / name).write_text(f"the finished run's {name}\n")
    return {p.name: p.read_bytes() for p in run_dir.iterdir()}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("arith")
    build_arithmetic(out, train_size=16, val_size=8, seed=0)
    return out


@pytest.mark.parametrize(
    "overrides, last_line",
    [
        (["depo.filter.warmup_steps=-1"], "depo: invalid config: depo.filter.warmup_steps:"),
        (["data.train_files=/nonexistent/train.parquet"], "depo: cannot train on this data: data.train_files:"),
        # verl's own check (run_depo calls it too): train_batch_size below ppo_mini_batch_size
        (["data.train_batch_size=3"], "verl: invalid config: train_batch_size (3) must be >="),
        # found at the first checkpoint, hours in, without this check
        (["trainer.default_local_dir=/proc/ckpt"], "depo: trainer.default_local_dir /proc/ckpt: cannot write to /proc"),
    ],
)
def test_a_refused_start_leaves_a_finished_run_dir_as_it_was(tmp_path, data, overrides, last_line):
    run_dir = tmp_path / "run"
    before = _finished_run(run_dir)
    valid = [
        f"data.train_files={data}/train.parquet",
        f"data.val_files={data}/val.parquet",
        "reward.custom_reward_function.path=pkg://recipe.depo.reward",
    ]
    out = _start(run_dir, *valid, *overrides, cwd=tmp_path)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.stderr.strip().splitlines()[-1].startswith(last_line), out.stderr[-2000:]
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_a_run_dir_that_cannot_be_written_is_one_line(tmp_path, data):
    valid = [f"data.train_files={data}/train.parquet", f"data.val_files={data}/val.parquet"]
    out = _start(Path("/proc/run"), *valid, "reward.custom_reward_function.path=pkg://recipe.depo.reward", cwd=tmp_path)
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.stderr.strip().splitlines()[-1].startswith("depo: hydra.run.dir /proc/run: cannot write to /proc")


def test_a_refused_start_does_not_create_the_run_dir(tmp_path):
    run_dir = tmp_path / "new-run"
    out = _start(run_dir, "depo.filter.warmup_steps=-1", cwd=tmp_path)
    assert out.returncode != 0 and "depo.filter.warmup_steps" in out.stderr
    assert not run_dir.exists() and not (tmp_path / "outputs").exists()


def test_the_gate_passes_a_good_start_once_and_main_does_not_repeat_it(data, monkeypatch):
    """In process: the gate (as hydra calls it, with the hydra node) passes a valid config, and
    main's own check then skips that same config but not a different one."""
    from recipe.depo import start_gate

    overrides = [
        f"data.train_files={data}/train.parquet",
        f"data.val_files={data}/val.parquet",
        "reward.custom_reward_function.path=pkg://recipe.depo.reward",
    ]
    with initialize_config_dir(CONFIG_DIR, version_base=None):
        full = compose("depo_trainer", overrides=overrides, return_hydra_config=True)
    assert full.hydra.callbacks.depo_start_gate._target_ == "recipe.depo.start_gate.StartGate"
    monkeypatch.setattr(start_gate, "_passed", None)
    start_gate.StartGate().on_run_start(config=full)
    calls = []
    monkeypatch.setattr(start_gate, "check_start", calls.append)
    task = start_gate.task_config(full)
    start_gate.check_start_once(task)
    assert calls == []
    task.data.train_batch_size = 4
    start_gate.check_start_once(task)
    assert calls == [task]
