import os
import subprocess
from pathlib import Path

import pytest

# Tests never reach a hub: every model and dataset is built locally or shipped in a package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# ---- the vLLM-on-CPU environment (bash examples/install_cpu.sh --vllm) -----------------------------
# vLLM needs its own torch, so it lives in a separate venv; tests drive its interpreter in subprocesses.
# CI (.ci/run) sets DEPO_REQUIRE_VLLM=1: a missing vLLM environment is then a failure, not a skip.
REPO = Path(__file__).resolve().parents[1]
REQUIRE_VLLM_ENV = "DEPO_REQUIRE_VLLM"


def vllm_venv_dir() -> Path:
    return Path(os.environ.get("VLLM_VENV") or REPO / ".venv-vllm")


@pytest.fixture(scope="session")
def vllm_python() -> str:
    """The vLLM venv's interpreter; skips (or, with DEPO_REQUIRE_VLLM=1, fails) when there is none."""
    venv = vllm_venv_dir()
    python = venv / "bin" / "python"
    if not python.exists():
        why = (
            f"no vLLM environment at {venv} (bash examples/install_cpu.sh --vllm creates it; "
            "VLLM_VENV=<dir> points elsewhere)"
        )
        if os.environ.get(REQUIRE_VLLM_ENV) == "1":
            pytest.fail(f"{why}; {REQUIRE_VLLM_ENV}=1 makes its absence a failure", pytrace=False)
        pytest.skip(why)
    check = subprocess.run(
        [str(python), "-m", "recipe.depo.cpu.vllm_env", "check"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    # an environment that exists but is incomplete is always a failure: someone meant to use it
    assert check.returncode == 0, f"vLLM environment at {venv} is incomplete:\n{check.stderr}"
    return str(python)


@pytest.fixture(scope="session")
def evaluate_in_vllm_venv(vllm_python):
    """Evaluate a run's checkpoints in the vLLM venv with evaluate's vLLM backend (eager: the graph
    compilation a GPU evaluation wants costs minutes on CPU). A checkpoint is read by the torch that
    wrote it (torch 2.11's pickled device mesh does not load in 2.13), so where the light
    environment's torch differs it must refuse the checkpoint in one line and write nothing."""

    def run(checkpoints: Path, data: Path, output: Path, env: dict | None = None) -> None:
        import json

        import torch

        from recipe.depo.evaluate import cli as evaluate

        argv = ["--model", str(checkpoints), "--data", str(data), "--n", "2", "--limit", "6",
                "--max-response-length", "12"]  # fmt: skip
        venv_torch = subprocess.run(
            [vllm_python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if venv_torch != torch.__version__:
            light = output.with_name(output.name + "_light")
            assert evaluate.main([*argv, "--output", str(light)]) == 2
            assert not (light / "merged_model").exists()
        cmd = [vllm_python, "-m", "recipe.depo.evaluate", *argv, "--output", str(output), "--backend", "vllm",
               "--enforce-eager"]  # fmt: skip
        run_env = {**(env if env is not None else os.environ), "PYTHONPATH": str(REPO)}
        run_env.update(VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_OMP_THREADS_BIND="nobind")
        proc = subprocess.run(cmd, cwd=REPO, env=run_env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        assert json.loads((output / "summary.json").read_text())["settings"]["backend"] == "vllm"

    return run


@pytest.fixture(scope="session")
def make_verl_checkpoint():
    """``make(model_dir, step_dir)``: a Hugging Face model as a verl FSDP actor checkpoint of world
    size 1 (the state dict as plain tensors, fsdp_config.json, the HF config in huggingface/): what
    verl's model merger reads, without a training run."""

    def make(model_dir: str | Path, step_dir: Path) -> Path:
        import json
        import shutil

        import torch
        from transformers import AutoModelForCausalLM

        actor = step_dir / "actor"
        (actor / "huggingface").mkdir(parents=True)
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        torch.save(model.state_dict(), actor / "model_world_size_1_rank_0.pt")
        (actor / "fsdp_config.json").write_text(json.dumps({"FSDP_version": 2, "world_size": 1}))
        for file in Path(model_dir).iterdir():
            if file.is_file() and file.suffix not in (".safetensors", ".bin"):
                shutil.copy(file, actor / "huggingface" / file.name)
        return step_dir

    return make
