"""verl 0.9.1's V1 trainer end to end on CPU through the depo plugin, via the demo launcher.

Run 1 (the `grpo_run` fixture, tests/e2e/conftest.py, whose two steps the shadow-mode test in
test_selectors_e2e.py also compares against) trains 2 steps with validation before and after and
saves a checkpoint; run 2 resumes it and trains step 3. Checked: the metrics verl logs, that the
rollout server's log-probs agree with the actor's recomputation (which also shows the per-step
weight sync reached the server), that the step count continues, and that the optimizer state
continues (Adam's step counter reaches 3). Part of the default suite (about 3 minutes on a 2-core
machine, one of them the run the shadow-mode test shares).
"""

import json

import pytest
import yaml
from demo_launch import launch, metric_records, validation_steps


def _train_records(records):
    return [r for r in records if "training/global_step" in r["data"]]


@pytest.mark.ray
def test_grpo_two_steps_then_resume_one(grpo_run, adam_steps):
    out_dir = grpo_run["dir"]
    train = _train_records(grpo_run["records"])
    assert [r["step"] for r in train] == [1, 2]
    for record in train:
        data = record["data"]
        for key in ("critic/score/mean", "actor/pg_loss", "timing_s/step", "timing_s/gen", "timing_s/update_actor"):
            assert key in data, f"{key} missing from step {record['step']}: {sorted(data)[:40]}"
        # verl compares the server's sampled log-probs with the actor's recomputed ones; at
        # step 2 the server must have the weights the actor had after step 1
        assert data["training/rollout_probs_diff_valid"] == 1
        assert data["training/rollout_probs_diff_mean"] < 1e-3, data["training/rollout_probs_diff_mean"]
    # the launcher's POLL_S reaches every Ray process as the string Ray requires (the plugin's
    # patch that reads it: tests/cpu/test_cpu_plugin.py)
    config = yaml.safe_load((out_dir / "config.yaml").read_text())
    assert config["ray_kwargs"]["ray_init"]["runtime_env"]["env_vars"]["DEPO_CPU_POLL_INTERVAL_S"] == "0.2"
    val_steps = validation_steps(grpo_run["records"])
    assert val_steps[0] == 0 and 2 in val_steps, val_steps

    ckpts = out_dir / "checkpoints"
    assert (ckpts / "latest_checkpointed_iteration.txt").read_text().strip() == "2"
    assert adam_steps(ckpts / "global_step_2") == {2.0}

    run2 = launch(
        out_dir, "run2", timeout=540, **grpo_run["knobs"], STEPS=3, SAVE_FREQ=1, TEST_FREQ=-1, RESUME_MODE="auto"
    )
    resumed = _train_records(metric_records(out_dir))
    assert [r["step"] for r in resumed] == [3], [r["step"] for r in resumed]
    assert (ckpts / "latest_checkpointed_iteration.txt").read_text().strip() == "3"
    # a fresh optimizer would be at step 1 here
    assert adam_steps(ckpts / "global_step_3") == {3.0}
    # the demo ends with its report, which reads the first run's metrics (moved aside as
    # metrics.<time>.jsonl when run 2 started) and run 2's together
    # the data step recorded the knobs it built the data with; the resumed run, with the same
    # knobs, passed the check and trained on it (another run's knobs: tests/demo/test_cpu_demo_knobs.py)
    knobs = grpo_run["knobs"]
    built_with = f"TRAIN_SIZE={knobs['TRAIN_SIZE']} VAL_SIZE={knobs['VAL_SIZE']} SEED=0 TIER_MIX=one-of-each"
    assert (out_dir / "data" / ".depo_cpu_data").read_text().strip() == built_with
    assert f"reusing existing parquet files ({built_with})" in run2.stdout
    assert "# Run report" in run2.stdout
    assert len(list(out_dir.glob("metrics.*.jsonl"))) == 1
    assert json.loads((out_dir / "report" / "report.json").read_text())["runs"]["GRPO"]["steps"] == 3
