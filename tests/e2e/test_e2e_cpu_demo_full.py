"""The README's CPU demo with its default knobs (slow: 5 min 41 s cold on 2 cores, ~2.3 min of it
building the warm starts): it ends with the report of its own run, and its policy learns."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.ray
def test_default_demo_finishes_with_its_report(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_")}
    env["OUT_DIR"] = str(tmp_path)
    proc = subprocess.run(
        ["bash", str(REPO / "examples" / "run_depo_cpu.sh")], env=env, capture_output=True, text=True, timeout=900
    )
    (tmp_path / "demo.log").write_text(proc.stdout + "\n---- stderr ----\n" + proc.stderr)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = proc.stdout[proc.stdout.index("# Run report") :]
    assert "## Table 1: accuracy (%) and GPU-hours" in report and "| DEPO warm-up | DEPO filtered |" in report
    run = json.loads((tmp_path / "report" / "report.json").read_text())["runs"]["DEPO"]
    assert run["steps"] == 20 and run["val_source"] == "validation at step 20 (mean@4)"
    # the warm start learns to box its answers: validation rises by more than two of its standard
    # errors (over prompts, from the run's validation dump) between the first and last validation
    first, last = run["val_ends"]["first"], run["val_ends"]["last"]
    assert (first["step"], last["step"]) == (0, 20)
    assert last["acc"] - first["acc"] > 2 * max(first["se"], last["se"]), run["val_ends"]
    assert "Validation accuracy (%), first → last" in report
    assert run["rollouts"] == 20 * 16 * 4 and 0 <= run["zero_adv_share"] <= 1
    for png in ("zero_adv_share", "estimator_calibration", "survival_rate", "val_vs_rollouts"):
        assert (tmp_path / "report" / f"{png}.png").is_file()
    minutes = int(re.search(r"run status: ok, wall time (\d+) min", proc.stdout).group(1))
    assert minutes < 15
