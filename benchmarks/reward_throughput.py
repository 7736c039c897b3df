"""Reward checks per second for recipe.depo.reward.compute_score on a mix of answer forms, and
its worst-case time per response over answers that run for minutes in sympy.

    python benchmarks/reward_throughput.py [--seconds 3]

Each response carries ~2,000 characters of reasoning before its answer, like a short rollout.
Throughput rows: each answer form alone (the exact in-process path vs math-verify in a worker
process), then the mix, on the main thread and on a worker thread (as verl's reward loop calls
it). The verdict cache is cleared before every check except in the last row, where answers
repeat as they do across the n responses of one prompt.

Adversarial rows: each answer once, cold, on the main thread and on a worker thread; the time
includes killing the worker at the deadline (``DEPO_REWARD_VERIFY_TIMEOUT_S``, 1 s by default).
One row scores an answer against a row with four alternative references (``extra_info.answers``):
the deadline is shared by all of a response's references.
The last line is the worst of them: the bound a single response can cost.

Concurrent rows: 8 and 32 scorers start at once (verl's reward executor on a bigger node), each
with a stalling answer against its own reference (nothing cached), against the shared pool's
checkers (``DEPO_REWARD_VERIFY_WORKERS`` kept, growing to ``DEPO_REWARD_VERIFY_MAX_WORKERS`` within
``DEPO_REWARD_VERIFY_POOL_MEMORY_MB``). Each response's own time, from its call to its verdict, is
what the deadline bounds, waiting for a free checker included; ``busy`` counts the responses whose
deadline passed before a checker came free (scored as timeouts, never tried).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version

from recipe.depo.reward import clear_caches, compute_score
from recipe.depo.verify_pool import DEFAULT_TIMEOUT_S, STALLING_ANSWERS, shared_pool

FILLER = ("We consider the problem carefully and compute step by step. " * 34)[:2000]

FORMS = {
    "dapo Answer: integer": [
        ("math_dapo", FILLER + "\nAnswer: 42", "42"),
        ("math_dapo", FILLER + "\nAnswer: 41", "42"),
    ],
    "boxed integer (gsm8k)": [
        ("gsm8k", FILLER + " so \\boxed{1,000}.", "1000"),
        ("gsm8k", FILLER + " \\boxed{17}", "18"),
    ],
    "boxed fraction vs decimal": [
        ("math500", FILLER + " \\boxed{\\frac{3}{4}}", "0.75"),
        ("math500", FILLER + " \\boxed{\\frac{2}{3}}", "0.75"),
    ],
    "boxed symbolic / sets": [
        ("math500", FILLER + " \\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{1}{\\sqrt{2}}"),
        ("olympiadbench", FILLER + " \\boxed{\\{2,-2\\}}", "2, -2"),
    ],
    "no answer": [("math500", FILLER, "3"), ("math_dapo", FILLER, "3")],
    "arithmetic (CPU demo)": [
        ("arithmetic", FILLER + " \\boxed{56}", "56"),
        ("arithmetic", FILLER + " \\boxed{57}", "56"),
    ],
}


ADVERSARIAL = list(STALLING_ANSWERS)


def rate(cases, seconds: float, cold: bool = True) -> float:
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for case in cases:
            if cold:  # every check pays for its own parse, as if every answer were new
                clear_caches()
            compute_score(*case)
        calls += len(cases)
    return calls / (time.perf_counter() - start)


def on_thread(fn, *args):
    out = {}
    worker = threading.Thread(target=lambda: out.setdefault("value", fn(*args)))
    worker.start()
    worker.join()
    return out["value"]


def seconds_for(case) -> tuple[float, str]:
    clear_caches()
    start = time.perf_counter()
    verdict = compute_score(*case)["verdict"]
    return time.perf_counter() - start, verdict


def concurrent_seconds(scorers: int) -> tuple[list[float], int]:
    """Each of ``scorers`` simultaneous responses' own seconds; how many found no checker in time."""
    clear_caches()
    pool = shared_pool()
    misses_before = pool.busy_misses
    barrier = threading.Barrier(scorers)

    def one(i: int) -> float:
        answer = ADVERSARIAL[i % len(ADVERSARIAL)]
        case = ("math500", FILLER + f" \\boxed{{{answer}}}", str(1000 + i))  # own reference: no cache hit
        barrier.wait()
        start = time.perf_counter()
        compute_score(*case)
        return time.perf_counter() - start

    with ThreadPoolExecutor(max_workers=scorers) as threads:
        seconds = list(threads.map(one, range(scorers)))
    return seconds, pool.busy_misses - misses_before


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per row")
    parser.add_argument("--only-concurrent", action="store_true", help="only the concurrent-scorer rows")
    args = parser.parse_args()
    mix = [case for cases in FORMS.values() for case in cases]
    for case in mix:  # warm-up: imports, sympy caches
        compute_score(*case)
    print(f"machine: {cpu_name()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}")
    print(f"python {platform.python_version()}, math-verify {version('math-verify')}, sympy {version('sympy')}")
    if not args.only_concurrent:
        throughput_rows(mix, args.seconds)
        adversarial_rows()
    concurrent_rows()


def throughput_rows(mix, seconds: float) -> None:
    print(f"{'answer form':<30} {'main thread /s':>15} {'worker thread /s':>17}")
    for name, cases in list(FORMS.items()) + [("MIX (all of the above)", mix)]:
        print(f"{name:<30} {rate(cases, seconds):>15,.0f} {on_thread(rate, cases, seconds):>17,.0f}")
    print(f"{'MIX, answers repeating':<30} {rate(mix, seconds, cold=False):>15,.0f}   (verdict cache warm)")
    print()


def adversarial_rows() -> None:
    title = f"adversarial answer (deadline {DEFAULT_TIMEOUT_S:g} s)"
    print(f"{title:<36} {'main thread s':>14} {'worker thread s':>16}  verdict")
    worst = 0.0
    rows = [(answer, answer, None) for answer in ADVERSARIAL]
    # a row with alternative answers: the deadline is per response, not per reference
    rows.append(("(100!)!, 5 reference answers", "(100!)!", {"answers": ["4", "5", "6", "7"]}))
    for name, answer, extra_info in rows:
        case = ("math500", FILLER + f" \\boxed{{{answer}}}", "3", extra_info)
        main_s, verdict = seconds_for(case)
        thread_s, _ = on_thread(seconds_for, case)
        worst = max(worst, main_s, thread_s)
        print(f"{name:<36} {main_s:>14.3f} {thread_s:>16.3f}  {verdict}")
    print(f"{'WORST CASE per response':<36} {worst:>14.3f} s")
    print()


def concurrent_rows() -> None:
    pool = shared_pool()
    print(f"concurrent scorers, stalling answers (checkers: {pool.workers} kept, up to {pool.max_workers})")
    print(f"{'scorers':>8} {'p50 s':>8} {'max s':>8} {'busy':>6} {'wall s':>8}")
    for scorers in (8, 32):
        start = time.perf_counter()
        seconds, busy = concurrent_seconds(scorers)
        wall = time.perf_counter() - start
        print(f"{scorers:>8} {statistics.median(seconds):>8.3f} {max(seconds):>8.3f} {busy:>6} {wall:>8.3f}")


if __name__ == "__main__":
    main()
