"""What the routing proxy adds: latency (p50/p99) and requests/s through ``python -m
recipe.depo.router serve`` against a backend that answers at once, vs. that backend directly.

    python benchmarks/router_overhead.py                        # tiny encoder and MiniLM, 1 and 32 in flight
    python benchmarks/router_overhead.py --encoders tiny --requests 500 --concurrency 1,8,64

The backend is ``recipe.depo.router.table_backend`` (no model: the latency it adds is HTTP only).
The proxy runs as its real CLI in its own process, with an untrained estimator checkpoint of the
given encoder (its predictions are 0.5, so every request goes the same way: only the cost of
deciding is measured). Prompts are synthetic maths problems in the DAPO template, as in
``estimator_throughput.py``. Each row: ``--requests`` chat completions (non-streamed) after a
warm-up, ``--concurrency`` of them in flight at a time; "added" is proxy minus direct at the
same percentile. Load generator, backend and proxy share this machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np
from estimator_throughput import machine_description, make_prompts, minilm_dir

REPO = Path(__file__).resolve().parents[1]


def start(command: list[str], marker: str, timeout_s: float = 180.0) -> tuple[subprocess.Popen, str]:
    """Start a server process and return it with the URL it prints after ``marker``."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + timeout_s
    while True:
        line = proc.stdout.readline()
        if marker in line:
            return proc, line.split(marker)[1].split()[0]
        if (not line and proc.poll() is not None) or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{' '.join(command)} did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def build_checkpoint(encoder: str, root: str) -> str:
    from recipe.depo.estimator import EstimatorConfig, OnlineEstimator, build_tiny_encoder

    backbone = build_tiny_encoder(os.path.join(root, "tiny")) if encoder == "tiny" else minilm_dir()
    return OnlineEstimator(EstimatorConfig(backbone=backbone, device="cpu")).save(os.path.join(root, encoder))


async def load(url: str, prompts: list[str], concurrency: int) -> tuple[np.ndarray, float]:
    """Latencies (s) of every request and the wall time, ``concurrency`` requests in flight."""
    latencies = np.zeros(len(prompts))
    queue = list(enumerate(prompts))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def worker():
            while queue:
                i, prompt = queue.pop()
                body = {"model": "depo-routed", "messages": [{"role": "user", "content": prompt}], "max_tokens": 16}
                started = time.perf_counter()
                async with session.post(f"{url}/v1/chat/completions", json=body) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{url}: HTTP {response.status}")
                latencies[i] = time.perf_counter() - started

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - started


async def encoder_calls(url: str) -> float:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/metrics") as response:
            text = await response.text()
    for line in text.splitlines():
        if line.startswith("depo_router_scoring_batch_size_count"):
            return float(line.split()[-1])
    return float("nan")


HEADER = (
    "| encoder | in flight | direct p50 ms | direct p99 ms | proxy p50 ms | proxy p99 ms | added p50 ms "
    "| added p99 ms | direct req/s | proxy req/s | encoder calls/req |"
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", default="tiny,minilm", help="comma list of: tiny, minilm")
    parser.add_argument("--requests", type=int, default=400, help="measured requests per row")
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--concurrency", default="1,32", help="comma list of requests in flight")
    parser.add_argument("--batch-window-ms", type=float, default=2.0)
    parser.add_argument("--torch-threads", type=int, default=1, help="the proxy's torch CPU threads")
    args = parser.parse_args(argv)
    import torch

    print(machine_description(torch.device("cpu")).rsplit("; ", 2)[0])  # the proxy's threads are printed below
    print(
        f"{args.requests} chat requests per row after {args.warmup} warm-up; proxy: batch window "
        f"{args.batch_window_ms} ms, {args.torch_threads} torch thread(s)"
    )
    print(HEADER)
    print("|" + "|".join("-" * len(c) for c in HEADER.split("|")[1:-1]) + "|")
    prompts = make_prompts(args.requests + args.warmup, seed=7)
    warmup, measured = prompts[: args.warmup], prompts[args.warmup :]
    backend, backend_url = start(
        [sys.executable, "-m", "recipe.depo.router.table_backend", "--name", "instant"], "listening on "
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for encoder in [e.strip() for e in args.encoders.split(",") if e.strip()]:
                if encoder not in ("tiny", "minilm"):
                    parser.error(f"--encoders: unknown encoder {encoder!r} (valid: tiny, minilm)")
                checkpoint = build_checkpoint(encoder, tmp)
                command = [sys.executable, "-m", "recipe.depo.router", "serve", "--estimator", checkpoint]
                command += ["--small", backend_url, "--large", backend_url, "--port", "0", "--device", "cpu"]
                command += ["--batch-window-ms", str(args.batch_window_ms), "--torch-threads", str(args.torch_threads)]
                command += ["--log-level", "warning"]
                proxy, proxy_url = start(command, "listening on ")
                try:
                    for concurrency in [int(c) for c in args.concurrency.split(",") if c]:
                        for url in (backend_url, proxy_url):
                            asyncio.run(load(url, warmup, min(concurrency, len(warmup))))
                        direct, direct_wall = asyncio.run(load(backend_url, measured, concurrency))
                        calls_before = asyncio.run(encoder_calls(proxy_url))
                        routed, routed_wall = asyncio.run(load(proxy_url, measured, concurrency))
                        calls = asyncio.run(encoder_calls(proxy_url)) - calls_before
                        n = len(measured)
                        d50, d99 = np.percentile(direct, [50, 99]) * 1000
                        p50, p99 = np.percentile(routed, [50, 99]) * 1000
                        print(
                            f"| {encoder:<7} | {concurrency:>9} | {d50:>13.2f} | {d99:>13.2f} | {p50:>12.2f} "
                            f"| {p99:>12.2f} | {p50 - d50:>12.2f} | {p99 - d99:>12.2f} | {n / direct_wall:>12.1f} "
                            f"| {n / routed_wall:>11.1f} | {calls / n:>17.3f} |",
                            flush=True,
                        )
                finally:
                    stop(proxy)
    finally:
        stop(backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
