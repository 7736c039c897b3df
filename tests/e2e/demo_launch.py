"""What the end-to-end tests share: the CPU demo launcher (examples/run_depo_cpu.sh) run in a clean
environment, its log kept in the run directory, and the metrics it leaves there."""

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "examples" / "run_depo_cpu.sh"
BATCH, N = 8, 4
# The runs' common size: the tiny (correct-answer) warm start, whose weights and greedy validation
# the checks were written against, on 96 training and 24 validation prompts, 8 prompts x 4 rollouts
# a step. Runs on the same data and seed draw the same prompts each step.
TINY_RUN = {"POLICY": "tiny", "TRAIN_SIZE": 96, "VAL_SIZE": 24, "BATCH": BATCH, "N": N}


def launcher_env(out_dir: Path, **knobs) -> dict[str, str]:
    """This process's environment without verl's own variables (a developer's VERL_* would reach the
    run), plus OUT_DIR and the demo's knobs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_")}
    env.update(OUT_DIR=str(out_dir), **{k: str(v) for k, v in knobs.items()})
    return env


def launch(out_dir: Path, log_name: str, overrides=(), timeout: int = 600, **knobs) -> subprocess.CompletedProcess:
    """One run of the demo launcher; its output is kept as ``<out_dir>/<log_name>.log`` and a failed
    run fails the test with the log's tail."""
    env = launcher_env(out_dir, **knobs)
    proc = subprocess.run(["bash", str(LAUNCHER), *overrides], env=env, capture_output=True, text=True, timeout=timeout)
    log = out_dir / f"{log_name}.log"
    log.write_text(proc.stdout + "\n---- stderr ----\n" + proc.stderr)
    assert proc.returncode == 0, f"{log_name} failed; see {log}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def metric_records(out_dir: Path) -> list[dict]:
    """verl's file logger records of the run's latest part (``metrics.jsonl``)."""
    return [json.loads(x) for x in (out_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]


def train_steps(records: list[dict]) -> dict[int, dict]:
    """The training steps' metrics by step (validation-only records left out)."""
    return {r["step"]: r["data"] for r in records if "training/global_step" in r["data"]}


def validation_steps(records: list[dict]) -> list[int]:
    return [r["step"] for r in records if any(k.startswith("val-core/") for k in r["data"])]


def rolled_out_prompts(out_dir: Path, step: int) -> list[str]:
    """The prompts a step rolled out, sorted (verl's rollout dump: one line per response)."""
    lines = [json.loads(x) for x in (out_dir / "rollouts" / f"{step}.jsonl").read_text().splitlines()]
    return sorted(x["input"] for x in lines)


# DEPO through its own entry point (the launcher's MODE=depo default names it too; said here so a
# change of the demo's default cannot turn these runs into plain GRPO)
DEPO_ENTRY = {"ENTRY": "recipe.depo.main_depo", "CONFIG_NAME": "depo_trainer", "ALGO": "grpo_depo"}


def fast_estimator_overrides(encoder: str) -> list[str]:
    """DEPO's estimator on the tiny encoder, heads only and fast-moving."""
    return [
        f"depo.estimator.backbone={encoder}",
        "depo.estimator.max_length=32",
        "depo.estimator.hidden_dims=[16]",
        "depo.estimator.lr=0.1",
        "depo.estimator.backbone_lr_scale=0.0",
    ]


def warmup_then_filter_overrides(encoder: str, admissions_log: Path, window: tuple[float, float]) -> list[str]:
    """A one-step warm-up, then DEPO's filter with a quarter of the rejections explored, every decision
    in ``admissions_log``. The fast estimator's first update already moves predictions off 0.5, so
    the filter has something to reject from step 2 on."""
    return [
        *fast_estimator_overrides(encoder),
        "depo.filter.warmup_steps=1",
        f"depo.filter.window=[{window[0]},{window[1]}]",
        "depo.filter.explore_rate=0.25",
        f"depo.admissions_log={admissions_log}",
    ]
