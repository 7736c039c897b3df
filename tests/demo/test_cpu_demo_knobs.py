"""examples/run_depo_cpu.sh checks its knobs before it touches anything. It deletes OUT_DIR's
metrics, rollouts and report before a fresh run (and continues from its checkpoints on a resume),
so it refuses a directory that holds a run it did not make; a knob that is not a number is named.
Each case stops before training (a refused knob or OUT_DIR, or TRAIN_SIZE=0, which the data
builder refuses right after the checks)."""

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _demo(out_dir: Path, **knobs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VERL_", "DEPO_"))}
    env.update({"OUT_DIR": str(out_dir), "TRAIN_SIZE": "0", "REPORT": "0", "PYTHONPATH": str(REPO), **knobs})
    return subprocess.run(
        ["bash", str(REPO / "examples" / "run_depo_cpu.sh")], env=env, capture_output=True, text=True, timeout=120
    )


def _finished_run(run_dir: Path) -> dict[str, bytes]:
    (run_dir / "rollouts").mkdir(parents=True)
    (run_dir / "rollouts" / "1.jsonl").write_text('{"step": 1}\n')
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "data": {}}\n')
    (run_dir / "config.yaml").write_text("trainer: {}\n")
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("resume", ["disable", "auto"])
def test_another_runs_directory_is_refused_and_kept(tmp_path, resume):
    run_dir = tmp_path / "real_run"
    before = _finished_run(run_dir)
    out = _demo(run_dir, RESUME_MODE=resume)
    assert out.returncode == 2
    assert f"OUT_DIR {run_dir} holds a run this demo did not make" in out.stderr, out.stderr[-2000:]
    after = {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}
    assert after == before


@pytest.mark.parametrize("state", ["missing", "empty", "marked"])
def test_a_new_empty_or_demo_directory_gets_past_the_check(tmp_path, state):
    out_dir = tmp_path / "demo"
    if state != "missing":
        _finished_run(out_dir) if state == "marked" else out_dir.mkdir()
    if state == "marked":
        (out_dir / ".depo_cpu_demo").touch()
    out = _demo(out_dir)
    assert "holds a run this demo did not make" not in out.stderr
    assert "--train-size must be a positive integer, got 0" in out.stderr, out.stderr[-2000:]
    assert (out_dir / ".depo_cpu_demo").exists()


@pytest.mark.parametrize(
    "knob, value, message",
    [
        ("N", "abc", "N must be a whole number, got 'abc'"),
        ("TIMEOUT_S", "10m", "TIMEOUT_S must be a whole number, got '10m'"),
        ("BATCH", "-4", "BATCH must be a whole number, got '-4'"),
        ("SAVE_FREQ", "x", "SAVE_FREQ must be an integer (-1: never), got 'x'"),
        ("MINI_BATCH", "5", "MINI_BATCH must divide BATCH (16), got '5'"),
        ("MINI_BATCH", "0", "MINI_BATCH must divide BATCH (16), got '0'"),
        ("NOISY_RECIPE", "pretrained", "NOISY_RECIPE must be 'finetune' or 'scratch', got 'pretrained'"),
        ("POLL_S", "0", "POLL_S must be a positive number of seconds (empty: verl's 2 s), got '0'"),
        ("POLL_S", "0.0", "POLL_S must be a positive number of seconds (empty: verl's 2 s), got '0.0'"),
        ("POLL_S", "2s", "POLL_S must be a positive number of seconds (empty: verl's 2 s), got '2s'"),
        (
            "TIER_MIX",
            "3,3,3",
            "TIER_MIX must be 6 comma-separated whole numbers, one per tier (e.g. 3,3,3,1,1,1), got '3,3,3'",
        ),
    ],
)
def test_a_bad_knob_is_refused_at_start_naming_it(tmp_path, knob, value, message):
    out = _demo(tmp_path / "demo", **{knob: value})
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1] == message, out.stderr[-2000:]
    assert not (tmp_path / "demo").exists()


def test_data_built_for_other_knobs_is_refused_before_the_last_run_is_cleared(tmp_path):
    """DATA_DIR was reused whatever it held: a run with SEED=1 (or another TRAIN_SIZE, VAL_SIZE or
    TIER_MIX) trained on the data of the knobs it was built with. The demo records those knobs
    beside the data it builds (the mark's content is checked against a real run in
    tests/e2e/test_e2e_cpu_grpo.py); other knobs are refused naming both, before the fresh run
    clears the earlier run's metrics and rollouts, and nothing is changed."""
    from data_prep import arithmetic

    data = tmp_path / "data"
    assert arithmetic.main(["--output", str(data), "--train-size", "32", "--val-size", "8", "--seed", "0"]) == 0
    built_with = "TRAIN_SIZE=32 VAL_SIZE=8 SEED=0 TIER_MIX=one-of-each"
    (data / ".depo_cpu_data").write_text(built_with + "\n")
    kept_data = {p.name: p.read_bytes() for p in data.iterdir()}
    out_dir = tmp_path / "demo"
    earlier_run = _finished_run(out_dir)
    (out_dir / ".depo_cpu_demo").touch()
    out = _demo(out_dir, DATA_DIR=str(data), TRAIN_SIZE="32", VAL_SIZE="8", POLICY="tiny", SEED="1")
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1] == (
        f"DATA_DIR {data} holds the data of {built_with}, not of TRAIN_SIZE=32 VAL_SIZE=8 SEED=1 "
        "TIER_MIX=one-of-each: choose another DATA_DIR (or remove that one)"
    )
    assert {p.name: p.read_bytes() for p in data.iterdir()} == kept_data
    files = {str(p.relative_to(out_dir)): p.read_bytes() for p in sorted(out_dir.rglob("*")) if p.is_file()}
    assert files == {**earlier_run, ".depo_cpu_demo": b""}
