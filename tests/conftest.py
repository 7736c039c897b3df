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
