"""examples/run_table3_routing.sh end to end on CPU: evaluate a small and a large model on two sets,
then the threshold sweep with the small model's estimator (the CPU demo's tiny policy stands in for
both models, a tiny encoder for the DEPO estimator)."""

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_table3_script_evaluates_both_models_then_sweeps(tmp_path):
    from data_prep.arithmetic import build_rows
    from data_prep.common import write_parquet_atomic
    from recipe.depo.demo.tiny_policy import ensure_tiny_policy
    from recipe.depo.estimator import EstimatorConfig, OnlineEstimator, build_tiny_encoder

    policy = str(ensure_tiny_policy())
    backbone = build_tiny_encoder(str(tmp_path / "encoder"))
    OnlineEstimator(EstimatorConfig(backbone=backbone, hidden_dims=[8])).save(
        str(tmp_path / "step" / "depo" / "estimator")
    )
    write_parquet_atomic(build_rows("test", seed=3, count=4), tmp_path / "eval" / "gsm8k.parquet")
    write_parquet_atomic(build_rows("test", seed=4, count=3), tmp_path / "eval" / "math500.parquet")
    env = dict(os.environ)
    env.update(
        SMALL_MODEL=policy, LARGE_MODEL=policy, ESTIMATOR=str(tmp_path / "step"), EVAL_DIR=str(tmp_path / "eval"),
        OUT_DIR=str(tmp_path / "out"), N="2", MAX_RESPONSE="12", BACKEND="hf", THRESHOLDS="0.0 1.0",
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
    )  # fmt: skip
    proc = subprocess.run(
        ["bash", str(REPO / "examples" / "run_table3_routing.sh")], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for model in ("small", "large"):
        summary = json.loads((tmp_path / "out" / model / "summary.json").read_text())
        assert set(summary["sets"]) == {"gsm8k", "math500"} and summary["settings"]["n"] == 2
    rows = {r["setting"]: r for r in json.loads((tmp_path / "out" / "table3.json").read_text())}
    assert list(rows) == ["1.5B alone", "7B alone", "tau=0", "tau=1"]
    small = json.loads((tmp_path / "out" / "small" / "summary.json").read_text())
    for name in ("gsm8k", "math500"):
        # tau=0 keeps every query on the small model: its accuracy is the small model's Avg@2
        assert 100 * rows["tau=0"]["sets"][name]["accuracy"] == pytest.approx(small["sets"][name]["acc"])
        assert rows["tau=1"]["sets"][name]["n_small"] == 0
    table = (tmp_path / "out" / "table3.md").read_text()
    assert table.startswith("| setting | GSM8K | MATH-500 | Avg | share on small |")
