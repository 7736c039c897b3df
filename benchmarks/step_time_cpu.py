"""Seconds per training step by phase, GRPO vs DAPO vs DEPO (the paper's Table 2, on this machine).

Runs the CPU demo launcher (`examples/run_depo_cpu.sh`) once per mode with the same data, policy,
batch and seed, then prints Table 2 and the rollout accounting of `python -m recipe.depo.report`
over the runs: one row per phase, one column per mode (DEPO's warm-up steps, which roll out
everything, in a column of their own). Steps before `--skip` (start-up effects) are left out of
the means.

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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recipe.depo.report.cli import build  # noqa: E402
from recipe.depo.report.render import accounting, table2  # noqa: E402


def run_mode(mode: str, out_dir: Path, data_dir: Path, args: argparse.Namespace) -> Path:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_")}
    env.update(
        MODE=mode,
        POLICY="tiny",  # the policy the published step times were measured with
        OUT_DIR=str(out_dir),
        DATA_DIR=str(data_dir),
        STEPS=str(args.steps),
        BATCH=str(args.batch),
        N=str(args.n),
        WARMUP=str(args.warmup),
        TEST_FREQ="-1",
        SAVE_FREQ="-1",
        SEED=str(args.seed),
        REPORT="0",
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="grpo,dapo,depo")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=3, help="DEPO warm-up steps")
    parser.add_argument("--skip", type=int, default=1, help="leading steps left out of the means")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=None, help="where the runs go (default: a temporary directory)")
    args = parser.parse_args(argv)

    root = Path(args.out_dir or tempfile.mkdtemp(prefix="depo_step_bench_"))
    runs = {mode.upper(): run_mode(mode, root / mode, root / "data", args) for mode in args.modes.split(",")}
    report, _ = build(runs, root / "report", skip_steps=args.skip)

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, CPU only; "
        f"{args.steps} steps x {args.batch} prompts x {args.n} rollouts, tiny Qwen2 policy, MiniLM estimator; "
        f"means over steps > {args.skip}; full report: {root / 'report' / 'report.md'}"
    )
    print("\n".join(table2(report["runs"])))
    print()
    print("\n".join(accounting(report["runs"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
