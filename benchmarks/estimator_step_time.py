"""Estimator seconds per RL step: scoring the scanned prompts plus one update on the kept ones.

The paper's step takes 125 s (Table 2, 7B, GPU); the estimator's share of it is what DEPO adds.
For each encoder and each estimator setting (the paper's, and the defaults depo_trainer.yaml
ships), one step's estimator work is timed: ``predict`` on ``--scanned`` prompts (a step scans
between the batch and ``max_scan`` = 8 x batch prompts) and ``update`` on ``--batch`` labelled
prompts (with the shipped defaults: several optimizer steps, replay and the calibration refit).

    python benchmarks/estimator_step_time.py                         # tiny and MiniLM, 128 / 256,1024
    python benchmarks/estimator_step_time.py --models tiny --scanned 128,1024 --repeats 5

Prompts (``--prompts``): ``realistic`` (default) draws each prompt's token length from the
distribution ``benchmarks/prompt_lengths.py`` states (DAPO-Math-17K problems, median 93 tokens;
printed with the table, measured with each encoder's own tokenizer); ``sim`` uses the selection
benchmark's generated problems (benchmarks/selection_sim.py), about 16 tokens each, which
understate the cost of real prompts several times. Each number is the median over ``--repeats``
steps after ``--warmup`` untimed steps (default 1); labels are random.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import prompt_lengths  # noqa: E402
import selection_sim  # noqa: E402

PAPER_STEP_S = 125.65  # DEPO's total seconds per step, Table 2


def settings(name: str) -> dict:
    est, _ = selection_sim.variant_settings(name)
    return est


def time_step(estimator, prompts: list[str], scanned: int, batch: int, rng: np.random.Generator) -> tuple[float, float]:
    import torch

    def sync():
        if estimator.device.type == "cuda":
            torch.cuda.synchronize(estimator.device)

    start = int(rng.integers(0, len(prompts) - scanned))
    scored = prompts[start : start + scanned]
    sync()
    t0 = time.perf_counter()
    estimator.predict(scored)
    sync()
    predict_s = time.perf_counter() - t0
    kept = scored[:batch]
    t0 = time.perf_counter()
    estimator.update(kept, rng.integers(0, 9, batch) / 8, -rng.random(batch))
    sync()
    return predict_s, time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,minilm", help="comma list of: tiny, minilm, or an encoder dir")
    parser.add_argument("--configs", default="paper,defaults", help="selection_sim variants (paper, defaults, ...)")
    parser.add_argument("--scanned", default="256,1024", help="prompts scored per step (comma list)")
    parser.add_argument("--batch", type=int, default=128, help="labelled prompts per step")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (0 on a busy CPU saves a step)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--prompts", default="realistic", choices=["realistic", "sim"], help="prompt lengths")
    args = parser.parse_args(argv)

    import torch
    import transformers

    from recipe.depo.estimator import EstimatorConfig, OnlineEstimator

    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    scanned_list = [int(s) for s in args.scanned.split(",") if s]
    size = 4 * max(scanned_list) + args.batch
    if args.prompts == "sim":
        texts = selection_sim.make_pool(selection_sim.WORKLOADS["even"], size, seed=0).texts
        print("prompts: the selection benchmark's generated problems")
    else:
        rng = np.random.default_rng(0)
        texts = prompt_lengths.texts_of_lengths(prompt_lengths.sample_lengths(size, rng), rng)
        print(f"prompts: {prompt_lengths.ASSUMED}")
    print(selection_sim.machine_description())
    print(f"paper's DEPO step: {PAPER_STEP_S} s (Table 2); 1% of it = {PAPER_STEP_S / 100:.2f} s")
    headers = ["model", "settings", "scanned", "labelled", "predict s", "update s", "estimator s/step", "% of 125 s"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            backbone = selection_sim.resolve_backbone(model, tmp)
            tokenizer = transformers.AutoTokenizer.from_pretrained(backbone)
            lengths = np.array([len(ids) for ids in tokenizer(texts, truncation=True, max_length=512)["input_ids"]])
            print(f"  {model}: prompt tokens {prompt_lengths.describe(lengths)}", flush=True)
            for config_name in [c.strip() for c in args.configs.split(",") if c.strip()]:
                cfg = EstimatorConfig.from_dict({**settings(config_name), "backbone": backbone, "device": args.device})
                for scanned in scanned_list:
                    est = OnlineEstimator(cfg)
                    rng = np.random.default_rng(0)
                    for _ in range(args.warmup):
                        time_step(est, texts, scanned, args.batch, rng)
                    runs = [time_step(est, texts, scanned, args.batch, rng) for _ in range(args.repeats)]
                    predict_s = statistics.median(r[0] for r in runs)
                    update_s = statistics.median(r[1] for r in runs)
                    total = predict_s + update_s
                    row = [model, config_name, str(scanned), str(args.batch), f"{predict_s:.2f}", f"{update_s:.2f}"]
                    rows.append(row + [f"{total:.2f}", f"{100 * total / PAPER_STEP_S:.1f}%"])
                    print(f"  {' / '.join(rows[-1])}", file=sys.stderr, flush=True)
    print(selection_sim.markdown_table(headers, rows, left=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
