from pathlib import Path

import pytest
from demo_launch import TINY_RUN, launch, metric_records, rolled_out_prompts


def _adam_steps(ckpt_dir: Path) -> set[float]:
    """Adam's per-parameter step counters in a verl actor checkpoint (a fresh optimizer says 1)."""
    import torch

    files = sorted((ckpt_dir / "actor").glob("optim_*.pt"))
    assert files, f"no optimizer state under {ckpt_dir / 'actor'}"
    state = torch.load(files[0], map_location="cpu", weights_only=False)
    per_param = state["state"].values() if "state" in state else state["optimizer"]["state"].values()
    return {float(s["step"]) for s in per_param}


@pytest.fixture
def adam_steps():
    return _adam_steps


@pytest.fixture(scope="session")
def e2e_encoder(tmp_path_factory) -> str:
    """The estimator's encoder for every end-to-end run: a one-layer BERT built from a config (runs
    read it and never write it; their estimator state goes to their own checkpoints)."""
    from recipe.depo.estimator import build_tiny_encoder

    folder = tmp_path_factory.mktemp("e2e_encoder") / "encoder"
    return build_tiny_encoder(str(folder), hidden_size=32, num_layers=1, num_heads=2)


@pytest.fixture(scope="session")
def grpo_run(tmp_path_factory) -> dict:
    """Plain GRPO through verl's own entry point (the demo's MODE=grpo) for two steps, validated
    before training and at step 2, saved at step 2 (no report: the GRPO test checks the report of
    its resumed run). Read by two tests: the GRPO test checks it and resumes it (so its directory
    changes afterwards), the shadow-mode test compares the prompts each step rolled out, taken here
    before anything else runs there."""
    out_dir = tmp_path_factory.mktemp("grpo_run")
    knobs = {**TINY_RUN, "MODE": "grpo", "TIMEOUT_S": 420}
    launch(out_dir, "run1", timeout=540, **knobs, STEPS=2, SAVE_FREQ=2, TEST_FREQ=2, RESUME_MODE="disable", REPORT=0)
    return {
        "dir": out_dir,
        "knobs": knobs,
        "records": metric_records(out_dir),
        "prompts": {step: rolled_out_prompts(out_dir, step) for step in (1, 2)},
    }
