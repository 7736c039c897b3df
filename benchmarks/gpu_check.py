"""The GPU check: the estimator's cost per RL step at paper scale, and the router's scoring latency.

One prepared script for a single-GPU machine with torch and transformers, no network, no vLLM and
no Ray (about 2 minutes on a datacenter GPU, well under 8):

    python benchmarks/gpu_check.py                       # --device auto: the GPU when torch sees one
    python benchmarks/gpu_check.py --json gpu_check.json --lengths-from train.parquet
    python benchmarks/gpu_check.py --device cpu --quick  # plumbing check (what the test runs)

Encoders: DistilBERT's shape (DistilBertConfig: 6 layers, 768 wide, 12 heads, 3,072 FFN, vocab
30,522; the authors' backbone) and all-MiniLM-L6-v2's (BertConfig: 6 layers, 384 wide, 12 heads,
1,536 FFN, vocab 30,522), built from a config with random weights (nothing downloaded; cost does
not depend on the weights), with the tiny test tokenizer. Per step, as the trainer does it:
``OnlineEstimator.predict`` on 1,024 scanned prompts (``max_scan`` = 8 x 128) and
``OnlineEstimator.update`` on 128 labelled ones, with the paper's settings and with the shipped
defaults (2 updates, affine calibration); the median of ``--repeats`` steps after a warm-up step,
against 1% of the paper's DEPO step (125.65 s, Table 2). Prompt lengths: ``prompt_lengths.py``
(stated in the output). Router: ``MicroBatchScorer`` (the proxy's micro-batcher, its default
2 ms window and 64-text batches) over ``OnlineEstimator.predict``, one prompt per request, 1 and
32 requests in flight: p50 / p99 seconds per request.

These are the project's real estimator and router code paths (``recipe.depo.estimator``,
``recipe.depo.router.scorer``). ``recipe.depo.estimator``'s config derives from verl's
``BaseConfig``; importing verl pulls in Ray, so on a machine without them the one module
``verl/base_config.py`` is loaded by itself or, without verl at all, a stand-in with the same
Mapping behaviour is used (the output says which).

``--quick`` shrinks everything (tiny encoders, 64 scanned / 16 labelled prompts, 20 requests): a
check that the script runs, not a measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
for path in (REPO, HERE):
    if path not in sys.path:
        sys.path.insert(0, path)

import prompt_lengths  # noqa: E402

PAPER_STEP_S = 125.65  # DEPO's seconds per step, Table 2 (7B, GPU)
BUDGET_S = PAPER_STEP_S / 100
VOCAB = 30522

ENCODERS = {
    # name: (config class, kwargs); vocab 30,522 as both real models have
    "distilbert-shaped": (
        "DistilBertConfig",
        dict(vocab_size=VOCAB, dim=768, n_layers=6, n_heads=12, hidden_dim=3072, max_position_embeddings=512),
    ),
    "minilm-shaped": (
        "BertConfig",
        dict(
            vocab_size=VOCAB,
            hidden_size=384,
            num_hidden_layers=6,
            num_attention_heads=12,
            intermediate_size=1536,
            max_position_embeddings=512,
        ),
    ),
}
QUICK_ENCODERS = {
    "tiny-distilbert": ("DistilBertConfig", dict(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=64)),
    "tiny-bert": (
        "BertConfig",
        dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
    ),
}


def import_estimator() -> tuple[object, object, str]:
    """(EstimatorConfig, OnlineEstimator, how verl's BaseConfig was found)."""
    how = "verl"
    try:
        import verl.base_config  # noqa: F401
    except ImportError:
        sys.modules.pop("verl", None)
        try:
            spec = importlib.util.find_spec("verl")
        except (ImportError, ValueError):
            spec = None
        source = os.path.join(spec.submodule_search_locations[0], "base_config.py") if spec else None
        package = types.ModuleType("verl")
        package.__path__ = []
        module = types.ModuleType("verl.base_config")
        if source and os.path.exists(source):
            module_spec = importlib.util.spec_from_file_location("verl.base_config", source)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
            how = f"verl/base_config.py alone ({source}; verl's package needs Ray)"
        else:
            module.BaseConfig = _StandInBaseConfig
            how = "a stand-in for verl's BaseConfig (verl is not installed)"
        package.base_config = module
        sys.modules["verl"], sys.modules["verl.base_config"] = package, module
    from recipe.depo.estimator import EstimatorConfig, OnlineEstimator

    return EstimatorConfig, OnlineEstimator, how


class _StandInBaseConfig:
    """What EstimatorConfig uses of verl's BaseConfig: a read-only Mapping over the fields."""

    _mutable_fields: set = set()

    def __setattr__(self, name, value):
        if name in self.__dict__ and name not in self._mutable_fields:
            from dataclasses import FrozenInstanceError

            raise FrozenInstanceError(f"Field '{name}' is frozen and cannot be modified")
        object.__setattr__(self, name, value)

    def get(self, key, default=None):
        return getattr(self, key, default)

    def __getitem__(self, key):
        return getattr(self, key)

    def __iter__(self):
        from dataclasses import fields

        return iter(f.name for f in fields(self))

    def __len__(self):
        from dataclasses import fields

        return len(fields(self))


def build_encoder(name: str, spec: tuple[str, dict], root: str) -> str:
    """A randomly initialised encoder of the given shape and the tiny tokenizer, saved to a dir."""
    import torch
    import transformers
    from transformers import AutoModel, BertTokenizer

    from recipe.depo.estimator.tiny import tiny_vocab

    out = os.path.join(root, name)
    config_cls, kwargs = spec
    config = getattr(transformers, config_cls)(**kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModel.from_config(config)
    model.save_pretrained(out)
    vocab = tiny_vocab()
    BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True, model_max_length=512).save_pretrained(
        out
    )
    return out


def machine(device) -> str:
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((ln.split(":", 1)[1].strip() for ln in handle if ln.startswith("model name")), cpu)
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} logical cores; torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
    if device.type == "cuda":
        text += f"; GPU: {torch.cuda.get_device_name(device)}"
    return text


def time_step(estimator, scanned: list[str], labelled: list[str], rng) -> tuple[float, float]:
    import torch

    def sync():
        if estimator.device.type == "cuda":
            torch.cuda.synchronize(estimator.device)

    sync()
    t0 = time.perf_counter()
    estimator.predict(scanned)
    sync()
    predict_s = time.perf_counter() - t0
    n = len(labelled)
    t0 = time.perf_counter()
    estimator.update(labelled, rng.integers(0, 9, n) / 8, -rng.random(n))
    sync()
    return predict_s, time.perf_counter() - t0


def step_batch(texts: list[str], scanned_n: int, labelled_n: int, rng) -> tuple[list[str], list[str]]:
    """A step's scanned prompts and the labelled ones among them."""
    start = int(rng.integers(0, len(texts) - scanned_n))
    scanned = texts[start : start + scanned_n]
    return scanned, scanned[:labelled_n]


def router_latency(estimator, texts: list[str], in_flight: int, requests: int) -> tuple[float, float]:
    """p50 and p99 seconds per single-prompt request through the router's micro-batcher."""
    from recipe.depo.router.scorer import MicroBatchScorer

    async def run() -> list[float]:
        scorer = MicroBatchScorer(estimator.predict, window_s=0.002, max_batch_size=64)
        await scorer.start()
        latencies: list[float] = []
        queue = iter(range(requests))

        async def client():
            for i in queue:
                t0 = time.perf_counter()
                await scorer.score([texts[i % len(texts)]])
                latencies.append(time.perf_counter() - t0)

        try:
            await asyncio.gather(*(client() for _ in range(in_flight)))
        finally:
            await scorer.close()
        return latencies

    latencies = asyncio.run(run())
    return float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="tiny encoders and batches: does it run")
    parser.add_argument("--json", default="gpu_check.json", help="where the results go (JSON)")
    parser.add_argument("--lengths-from", default=None, help="a data_prep train.parquet to draw prompt lengths from")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    import torch
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    EstimatorConfig, OnlineEstimator, how = import_estimator()

    scanned_n, labelled_n, requests = (64, 16, 20) if args.quick else (1024, 128, 400)
    repeats = 1 if args.quick else args.repeats
    encoders = QUICK_ENCODERS if args.quick else ENCODERS
    rng = np.random.default_rng(0)
    if args.lengths_from:
        lengths = prompt_lengths.lengths_from_parquet(args.lengths_from, 4 * scanned_n, rng)
        length_source = f"drawn from {args.lengths_from} (~4 characters per token)"
    else:
        lengths = prompt_lengths.sample_lengths(4 * scanned_n, rng)
        length_source = prompt_lengths.ASSUMED
    texts = prompt_lengths.texts_of_lengths(lengths, rng)

    print(f"machine: {machine(device)}")
    print(f"device: {device}; verl BaseConfig from: {how}")
    print(f"prompt lengths: {length_source}")
    print(f"  this run's prompts: {prompt_lengths.describe(lengths)}")
    print(f"per step: predict on {scanned_n} scanned, update on {labelled_n} labelled; budget = 1% of the")
    quick_note = "   [--quick: not a measurement]" if args.quick else ""
    print(f"  paper's {PAPER_STEP_S} s step = {BUDGET_S:.3f} s{quick_note}")
    settings = {"paper": EstimatorConfig.paper().to_dict(), "defaults": EstimatorConfig().to_dict()}
    rows: list[dict] = []
    router_rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in encoders.items():
            backbone = build_encoder(name, spec, tmp)
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(backbone)
            measured = np.array([len(ids) for ids in tokenizer(texts[:256])["input_ids"]])
            if not np.array_equal(measured, lengths[:256]):  # the lengths above are the encoder's
                raise SystemExit(f"gpu_check: texts do not have the intended token lengths for {name}")
            for setting, values in settings.items():
                cfg = EstimatorConfig.from_dict({**values, "backbone": backbone, "device": device.type})
                estimator = OnlineEstimator(cfg)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                step_rng = np.random.default_rng(1)
                # a warm-up step first: kernels, allocator, optimizer state
                time_step(estimator, *step_batch(texts, scanned_n, labelled_n, step_rng), step_rng)
                runs = [
                    time_step(estimator, *step_batch(texts, scanned_n, labelled_n, step_rng), step_rng)
                    for _ in range(repeats)
                ]
                predict_s = statistics.median(r[0] for r in runs)
                update_s = statistics.median(r[1] for r in runs)
                row = {
                    "encoder": name,
                    "settings": setting,
                    "scanned": scanned_n,
                    "labelled": labelled_n,
                    "predict_s": predict_s,
                    "update_s": update_s,
                    "total_s": predict_s + update_s,
                    "share_of_step": (predict_s + update_s) / PAPER_STEP_S,
                    "within_1pct": predict_s + update_s <= BUDGET_S,
                }
                if device.type == "cuda":
                    row["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
                rows.append(row)
                print(f"  {name} / {setting}: {row['total_s']:.3f} s", file=sys.stderr, flush=True)
                if setting == "defaults":
                    for in_flight in (1, 32):
                        p50, p99 = router_latency(estimator, texts, in_flight, requests)
                        router_rows.append(
                            {"encoder": name, "in_flight": in_flight, "requests": requests, "p50_s": p50, "p99_s": p99}
                        )
                del estimator
                if device.type == "cuda":
                    torch.cuda.empty_cache()

    print()
    print("| encoder | settings | predict s | update s | estimator s/step | % of 125.65 s | within 1% |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['encoder']} | {r['settings']} | {r['predict_s']:.3f} | {r['update_s']:.3f} | {r['total_s']:.3f} "
            f"| {100 * r['share_of_step']:.2f}% | {'yes' if r['within_1pct'] else 'NO'} |"
        )
    print()
    print("| router encoder | in flight | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    for r in router_rows:
        print(f"| {r['encoder']} | {r['in_flight']} | {1000 * r['p50_s']:.1f} | {1000 * r['p99_s']:.1f} |")
    result = {
        "machine": machine(device),
        "device": device.type,
        "quick": args.quick,
        "verl_base_config": how,
        "prompt_lengths": {"source": length_source, "summary": prompt_lengths.describe(lengths)},
        "paper_step_s": PAPER_STEP_S,
        "budget_s": BUDGET_S,
        "estimator": rows,
        "router": router_rows,
        "wall_s": time.perf_counter() - started,
    }
    directory = os.path.dirname(os.path.abspath(args.json))
    os.makedirs(directory, exist_ok=True)
    partial = args.json + ".partial"
    with open(partial, "w") as handle:
        json.dump(result, handle, indent=2)
    os.replace(partial, args.json)
    print(f"\nwrote {args.json}; wall time {result['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
