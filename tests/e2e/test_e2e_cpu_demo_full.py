"""The README's CPU demo with its default knobs (slow: ~4-6 minutes on 2 cores)."""

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.ray
def test_default_demo_finishes_with_a_summary(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_")}
    env["OUT_DIR"] = str(tmp_path)
    proc = subprocess.run(
        ["bash", str(REPO / "examples" / "run_depo_cpu.sh")], env=env, capture_output=True, text=True, timeout=900
    )
    (tmp_path / "demo.log").write_text(proc.stdout + "\n---- stderr ----\n" + proc.stderr)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = proc.stdout[proc.stdout.index("CPU demo summary") :]
    assert "run status        : ok" in summary
    assert re.search(r"training steps    : 10\b", summary), summary
    assert re.search(r"validation acc    : [0-9.]+ \(step 0, before training\) -> [0-9.]+ \(step 10\)", summary), (
        summary
    )
    assert "zero-adv. groups" in summary
    minutes = float(re.search(r"total wall time   : ([0-9.]+) min", summary).group(1))
    assert minutes < 15
