"""Every Table 1 GPU launcher (examples/run_{depo,grpo,dapo}_qwen*.sh) trains two steps on CPU through
verl's vLLM rollout, via examples/run_gpu_launcher_on_cpu.sh, which overrides only what a CPU cannot
have (model, data, lengths, batch, GPU counts, TP, dtype/attention/FSDP2 from the cpu_vllm preset).

2-3 minutes per launcher on a 2-core machine, 14 launchers (28-33 min measured). The one our users run,
run_depo_qwen7b.sh, which every other DEPO row wraps, runs in the default suite, so a change that
breaks the launchers fails CI; the other 13 are marked slow. Needs the vLLM venv
(bash examples/install_cpu.sh --vllm). All 14, or one by its id (no -m filter):
    python3 -m pytest tests/e2e/test_gpu_launchers_on_cpu.py
    python3 -m pytest "tests/e2e/test_gpu_launchers_on_cpu.py::test_gpu_launcher_two_steps_on_cpu[run_grpo_qwen7b.sh]"
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
RUNNER = EXAMPLES / "run_gpu_launcher_on_cpu.sh"
GPU_LAUNCHERS = sorted(
    p.name
    for p in EXAMPLES.glob("run_*.sh")
    if p.name.split("_")[1] in ("grpo", "dapo", "depo") and "cpu" not in p.name
)
IN_DEFAULT_SUITE = "run_depo_qwen7b.sh"


def _effective_knobs(launcher: str) -> dict[str, str]:
    """The row's exported defaults (DEPO=..., FILTER=...), following its `exec` into the 7B launcher."""
    knobs = {}
    for line in (EXAMPLES / launcher).read_text().splitlines():
        line = line.strip()
        if line.startswith("export ") and ":-" in line:
            name, _, rest = line[len("export ") :].partition("=${")
            knobs[name] = rest.split(":-", 1)[1].rstrip("}")
    return knobs


def test_the_table_1_launchers_are_all_here():
    assert len(GPU_LAUNCHERS) == 14, GPU_LAUNCHERS
    assert IN_DEFAULT_SUITE in GPU_LAUNCHERS


@pytest.mark.ray
@pytest.mark.parametrize(
    "launcher", [pytest.param(n, marks=() if n == IN_DEFAULT_SUITE else pytest.mark.slow) for n in GPU_LAUNCHERS]
)
def test_gpu_launcher_two_steps_on_cpu(launcher, tmp_path, vllm_python):
    out_dir = tmp_path / launcher.removesuffix(".sh")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_")}
    env.update(OUT_DIR=str(out_dir), DATA_DIR=str(tmp_path / "data"), TIMEOUT_S="600")
    proc = subprocess.run(
        ["bash", str(RUNNER), str(EXAMPLES / launcher)], env=env, capture_output=True, text=True, timeout=720
    )
    (tmp_path / "run.log").write_text(proc.stdout + "\n---- stderr ----\n" + proc.stderr)
    assert proc.returncode == 0, f"see {tmp_path / 'run.log'}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "(vLLMHttpServer pid=" in proc.stdout

    records = [json.loads(x) for x in (out_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    steps = {r["step"]: r["data"] for r in records if "training/global_step" in r["data"]}
    assert sorted(steps) == [1, 2]
    validated = [r["step"] for r in records if any(k.startswith("val-core/") for k in r["data"])]
    assert validated == [0, 2], validated  # val_before_train and the last step
    for step, m in steps.items():
        assert "actor/pg_loss" in m and "critic/score/mean" in m, step
        assert m["training/rollout_probs_diff_valid"] == 1
        assert m["training/rollout_probs_diff_max"] < 1e-3, (step, m["training/rollout_probs_diff_max"])
        assert "depo/zero_adv_group_frac" in m

    knobs = _effective_knobs(launcher)
    depo = knobs.get("DEPO", "true") == "true"
    if depo and knobs.get("FILTER", "true") == "true":
        for step, m in steps.items():
            assert m["depo/estimator/num_updates"] == step
            assert m["depo/warmup_active"] == 1.0  # 100 warm-up steps in every DEPO row
    if not depo:
        assert not any(k.startswith("depo/estimator/") for m in steps.values() for k in m)
    # save_freq 50 still saves the last step
    assert (out_dir / "checkpoints" / "global_step_2" / "actor").is_dir()
    # the run directory is what the report reads
    report = subprocess.run(
        [sys.executable, "-m", "recipe.depo.report", "--runs", f"run={out_dir}", "--output", str(tmp_path / "report")],
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert (tmp_path / "report" / "report.md").is_file()
