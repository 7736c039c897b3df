"""Seconds per training step by phase, DEPO vs plain GRPO (the paper's Table 2, on this machine).

Runs the CPU demo launcher (`examples/run_depo_cpu.sh`) once per mode with the same data, policy,
batch and seed, then reads verl's per-step timings from each run's metrics and prints a table:
one row per phase, one column per mode. Steps before `--skip` (start-up effects) are left out,
and for DEPO the warm-up steps (no filtering) are reported apart from the filtered ones.

    python benchmarks/step_time_cpu.py                       # 10 steps x 16 prompts x 4 rollouts
    python benchmarks/step_time_cpu.py --steps 20 --modes depo,grpo

This is a CPU measurement of the whole pipeline with a tiny policy, where generation is cheap
next to the estimator; on a GPU cluster the balance differs (the paper: rollout ~100-190 s/step).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import mean

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recipe.depo.demo.summarize import read_metrics, training_steps, zero_advantage_share  # noqa: E402

# (label, metric key): verl's own timers plus DEPO's intake scoring and estimator update
PHASES = [
    ("estimator scoring (intake)", "depo/estimator/predict_time_s"),
    ("generation (rollout)", "timing_s/gen"),
    ("old log-prob", "timing_s/old_log_prob"),
    ("advantage", "timing_s/adv"),
    ("actor update", "timing_s/update_actor"),
    ("estimator update", "timing_s/depo_estimator_update"),
    ("weight sync", "timing_s/update_weights"),
    ("total step", "timing_s/step"),
]


def run_mode(mode: str, out_dir: Path, args: argparse.Namespace) -> Path:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_")}
    env.update(
        MODE=mode,
        OUT_DIR=str(out_dir),
        STEPS=str(args.steps),
        BATCH=str(args.batch),
        N=str(args.n),
        WARMUP=str(args.warmup),
        TEST_FREQ="-1",
        SAVE_FREQ="-1",
        SEED=str(args.seed),
        EXPERIMENT=f"bench_{mode}",
    )
    log = out_dir / "bench.log"
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        proc = subprocess.run(
            ["bash", str(REPO / "examples" / "run_depo_cpu.sh"), "trainer.val_before_train=false"],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    if proc.returncode != 0:
        raise SystemExit(f"{mode} run failed (exit {proc.returncode}); see {log}")
    return out_dir


def column(steps: list[dict], key: str) -> str:
    values = [s[key] for s in steps if key in s and s[key] == s[key]]
    return f"{mean(values):.2f}" if values else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="depo,grpo")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=3, help="DEPO warm-up steps")
    parser.add_argument("--skip", type=int, default=1, help="leading steps left out of the means")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=None, help="where the runs go (default: a temporary directory)")
    args = parser.parse_args(argv)

    root = Path(args.out_dir or tempfile.mkdtemp(prefix="depo_step_bench_"))
    columns: list[tuple[str, list[dict], Path]] = []
    for mode in args.modes.split(","):
        out = run_mode(mode, root / mode, args)
        steps = [r["data"] for r in training_steps(read_metrics(out / "metrics.jsonl"))][args.skip :]
        if mode == "depo":
            columns.append(("DEPO warm-up", [s for s in steps if s.get("depo/warmup_active") == 1.0], out))
            columns.append(("DEPO filtered", [s for s in steps if s.get("depo/warmup_active") == 0.0], out))
        else:
            columns.append((mode.upper(), steps, out))

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, CPU only; "
        f"{args.steps} steps x {args.batch} prompts x {args.n} rollouts, tiny Qwen2 policy, MiniLM estimator; "
        f"means over steps > {args.skip}"
    )
    print("| phase (s/step) | " + " | ".join(name for name, _, _ in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for label, key in PHASES:
        print(f"| {label} | " + " | ".join(column(steps, key) for _, steps, _ in columns) + " |")
    print("| steps averaged | " + " | ".join(str(len(steps)) for _, steps, _ in columns) + " |")
    shares = []
    for _, steps, out in columns:
        numbers = {int(s["training/global_step"]) for s in steps}
        zero = [share for step, share, _ in zero_advantage_share(out / "rollouts") if step in numbers]
        shares.append(f"{mean(zero):.0%}" if zero else "-")
    print("| zero-advantage groups | " + " | ".join(shares) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
