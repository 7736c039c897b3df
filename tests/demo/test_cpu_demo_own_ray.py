"""A CPU demo run starts its own Ray instance. Without an address, ray.init() joins a cluster that
``ray start`` (or a test's Ray cluster) left running on the machine and then refuses the run's
num_cpus: the run died at start whenever such a cluster was up.

The other instance here is a head node from Ray's ``cluster_utils.Cluster`` (what ``ray start``
leaves, and what tests/cluster starts), whose address a plain ``ray.init()`` on this machine finds
and joins; the launcher's training entry is replaced (its ``ENTRY`` knob) by a probe that does
what verl's entry does first, ``ray.init`` with ``num_cpus``, and prints the address it got.
Everything before it (knob checks, data, the cached warm start) is the launcher's real path."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import ray
ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
print("probe gcs", ray.get_runtime_context().gcs_address, flush=True)
ray.shutdown()
"""

HOLDER = """
import sys
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
print("holder gcs", cluster.address, flush=True)
sys.stdin.readline()  # held until the test closes stdin
cluster.shutdown()
"""


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VERL_", "DEPO_", "RAY_"))}
    env.update(extra)
    return env


@pytest.fixture()
def other_run():
    """A Ray cluster left running on this machine."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env()
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("holder gcs"), line
        yield line.split()[-1]
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


def test_a_run_beside_another_rays_instance_starts_its_own(other_run, tmp_path):
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    (probe_dir / "ray_probe.py").write_text(textwrap.dedent(PROBE))
    # The control: what verl's entry does with no address joins that cluster and fails.
    joined = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=_env(), timeout=120, cwd=probe_dir
    )
    assert joined.returncode != 0
    assert "num_cpus and num_gpus must not be provided" in joined.stderr, joined.stderr[-2000:]

    env = _env(
        OUT_DIR=str(tmp_path / "demo"),
        DATA_DIR=str(tmp_path / "data"),
        TRAIN_SIZE="32",
        VAL_SIZE="8",
        REPORT="0",
        ENTRY="ray_probe",
        PYTHONPATH=f"{REPO}{os.pathsep}{probe_dir}",
    )
    out = subprocess.run(
        ["bash", str(REPO / "examples" / "run_depo_cpu.sh")], capture_output=True, text=True, env=env, timeout=900
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    got = [line.split()[-1] for line in out.stdout.splitlines() if line.startswith("probe gcs")]
    assert len(got) == 1 and got[0] != other_run, out.stdout[-2000:]
