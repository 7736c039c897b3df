"""Reward checks per second for recipe.depo.reward.compute_score on a mix of answer forms.

    python benchmarks/reward_throughput.py [--seconds 3]

Each response carries ~2,000 characters of reasoning before its answer, like a short rollout.
Rows: each answer form alone (the string/number fast path vs math-verify), then the mix, on the
main thread (math-verify's signal timeouts on) and on a worker thread (as verl's reward loop
calls it: no signals, our own guard). Caches are cleared before every check except in the last
row, where answers repeat as they do across the n responses of one prompt.
"""

from __future__ import annotations

import argparse
import os
import platform
import threading
import time
from importlib.metadata import version

from recipe.depo.reward import clear_caches, compute_score

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


def rate(cases, seconds: float, cold: bool = True) -> float:
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for case in cases:
            if cold:  # every check pays for its own parse, as if every answer were new
                clear_caches()
            compute_score(*case)
        calls += len(cases)
    return calls / (time.perf_counter() - start)


def rate_on_thread(cases, seconds: float) -> float:
    out = {}
    worker = threading.Thread(target=lambda: out.setdefault("rate", rate(cases, seconds)))
    worker.start()
    worker.join()
    return out["rate"]


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
    args = parser.parse_args()
    mix = [case for cases in FORMS.values() for case in cases]
    for case in mix:  # warm-up: imports, sympy caches
        compute_score(*case)
    print(f"machine: {cpu_name()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}")
    print(f"python {platform.python_version()}, math-verify {version('math-verify')}, sympy {version('sympy')}")
    print(f"{'answer form':<30} {'main thread /s':>15} {'worker thread /s':>17}")
    for name, cases in list(FORMS.items()) + [("MIX (all of the above)", mix)]:
        print(f"{name:<30} {rate(cases, args.seconds):>15,.0f} {rate_on_thread(cases, args.seconds):>17,.0f}")
    print(f"{'MIX, answers repeating':<30} {rate(mix, args.seconds, cold=False):>15,.0f}   (parse/verdict cache warm)")


if __name__ == "__main__":
    main()
