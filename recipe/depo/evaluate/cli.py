"""``python -m recipe.depo.evaluate``: Avg@n of a model on evaluation sets, resumable.

    python -m recipe.depo.evaluate --model CKPT/global_step_1000 --data data/eval --output RUN/eval
    python -m recipe.depo.evaluate --model Qwen/Qwen2.5-7B-Instruct --data data/eval/gsm8k.parquet \\
        --n 32 --output runs/qwen7b/eval

Writes ``OUTPUT/<set>.jsonl`` (one line per query: index, data_source, prompt_hash, n, num_correct,
acc, mean_response_length), ``OUTPUT/summary.json`` and ``OUTPUT/summary.md`` (per set Avg@n in %,
and their unweighted mean ``Avg`` as in Table 1). Rerunning the same command skips the queries
already written; the settings a folder was started with are kept in ``OUTPUT/eval_config.json``
and a rerun with different ones is refused.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from recipe.depo.evaluate.backends import BACKENDS, HFBackend, Sampling, VLLMBackend, chat_ids, choose_backend
from recipe.depo.evaluate.backends import query_seed as make_seed
from recipe.depo.evaluate.data import EvalError, EvalQuery, load_set, parquet_files
from recipe.depo.evaluate.model import loadable_path, locate_model
from recipe.depo.evaluate.results import QueryResult, append_results, read_results, set_summary, write_summary
from recipe.depo.fsutil import write_text_atomic

CONFIG_FILE = "eval_config.json"
# settings that change a query's result: a resumed folder must keep them
RESULT_SETTINGS = ("model", "backend", "n", "temperature", "top_p", "max_response_length", "seed")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m recipe.depo.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="HF model dir, hub id, or verl checkpoint folder (global_step_N)")
    p.add_argument("--data", required=True, nargs="+", help="eval parquet files or folders of them")
    p.add_argument("--output", required=True, help="output folder (created; a rerun resumes it)")
    p.add_argument("--n", type=int, default=32, help="samples per query (Avg@n; the paper: 32)")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-response-length", type=int, default=10240, help="tokens per response (the launchers' 10240)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (each query derives its own from it)")
    p.add_argument("--backend", default="auto", help=f"one of {', '.join(BACKENDS)}")
    p.add_argument("--batch-size", type=int, default=64, help="queries generated and written together")
    p.add_argument("--limit", type=int, default=None, help="first N queries of each set (smoke runs)")
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="vLLM tensor parallelism")
    p.add_argument(
        "--merged-dir", default=None, help="where a verl checkpoint's merged actor goes (default OUTPUT/merged_model)"
    )
    return p


def _check_args(args: argparse.Namespace) -> None:
    if args.n < 1:
        raise EvalError(f"--n must be >= 1, got {args.n}")
    if not math.isfinite(args.temperature) or args.temperature < 0:
        raise EvalError(f"--temperature must be >= 0, got {args.temperature}")
    if not 0.0 < args.top_p <= 1.0:
        raise EvalError(f"--top-p must lie in (0, 1], got {args.top_p}")
    if args.max_response_length < 1:
        raise EvalError(f"--max-response-length must be >= 1, got {args.max_response_length}")
    if args.batch_size < 1:
        raise EvalError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise EvalError(f"--limit must be >= 1, got {args.limit}")


def _check_settings(output: Path, settings: dict) -> None:
    """A folder resumed with other sampling settings would mix two evaluations: refuse."""
    path = output / CONFIG_FILE
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise EvalError(f"{path} is not JSON; remove it or use a fresh --output") from None
        for key in RESULT_SETTINGS:
            if stored.get(key) != settings[key]:
                raise EvalError(
                    f"--output {output} was started with {key}={stored.get(key)!r}, this run has {settings[key]!r} "
                    f"(see {path}); use a fresh --output"
                )
    else:
        output.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(settings, indent=2) + "\n")


def _check_reward(name: str, file: Path, query: EvalQuery) -> None:
    """Fail before generating anything when the reward cannot score this set."""
    from recipe.depo.reward import compute_score

    try:
        result = compute_score(query.data_source, "", query.ground_truth, query.extra_info)
    except ValueError as exc:
        raise EvalError(
            f"{file} (set {name}): the reward cannot score data_source {query.data_source!r}: {exc}"
        ) from None
    if not isinstance(result, dict) or "acc" not in result:
        raise EvalError(f"{file} (set {name}): the reward returned no 'acc' for data_source {query.data_source!r}")


def _done(name: str, path: Path, queries: list[EvalQuery]) -> dict[int, dict]:
    """Results already written for this set, checked against the data."""
    by_index = {q.index: q for q in queries}
    done: dict[int, dict] = {}
    for record in read_results(path, repair=True):
        index = record["index"]
        query = by_index.get(index)
        if query is None:
            continue  # written by a run with a larger --limit
        if record.get("prompt_hash") != query.prompt_hash:
            raise EvalError(
                f"{path}: index {index} was evaluated on a different prompt than set {name!r} has now; "
                "use a fresh --output"
            )
        done[index] = record
    return done


def score(query: EvalQuery, texts: list[str]) -> list[float]:
    from recipe.depo.reward import compute_score

    return [float(compute_score(query.data_source, t, query.ground_truth, query.extra_info)["acc"]) for t in texts]


def evaluate(args: argparse.Namespace) -> dict:
    _check_args(args)
    backend_name = choose_backend(args.backend)
    located = locate_model(args.model)
    files = parquet_files(args.data)
    sets = {name: load_set(file, args.limit) for name, file in files.items()}
    for name, queries in sets.items():
        for query in {q.data_source: q for q in queries}.values():  # one query per data source
            _check_reward(name, files[name], query)
    output = Path(args.output)
    settings = {
        # where the weights come from, independent of how the path was typed
        "model": located.path if located.kind == "hub" else str(Path(located.path).resolve()),
        "backend": backend_name,
        "n": args.n,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "max_response_length": args.max_response_length,
        "seed": args.seed,
    }
    _check_settings(output, settings)
    done = {name: _done(name, output / f"{name}.jsonl", queries) for name, queries in sets.items()}
    pending = {name: [q for q in queries if q.index not in done[name]] for name, queries in sets.items()}

    if any(pending.values()):
        from tqdm import tqdm

        path = loadable_path(located, args.merged_dir or output / "merged_model")
        if backend_name == "vllm":
            backend = VLLMBackend(path, tensor_parallel_size=args.tensor_parallel_size, seed=args.seed)
        else:
            backend = HFBackend(path)
        sampling = Sampling(args.n, args.temperature, args.top_p, args.max_response_length)
        for name, queries in pending.items():
            bar = tqdm(total=len(sets[name]), initial=len(sets[name]) - len(queries), desc=name, unit="query")
            for start in range(0, len(queries), args.batch_size):
                batch = queries[start : start + args.batch_size]
                prompts = [chat_ids(backend.tokenizer, q.messages) for q in batch]
                seeds = [make_seed(args.seed, name, q.index) for q in batch]
                generations = backend.generate(prompts, seeds, sampling)
                results = [
                    QueryResult.from_scores(q, score(q, [g.text for g in gens]), [len(g.token_ids) for g in gens])
                    for q, gens in zip(batch, generations, strict=True)
                ]
                append_results(output / f"{name}.jsonl", results)
                bar.update(len(batch))
            bar.close()

    per_set = {}
    for name, queries in sets.items():
        records = {r["index"]: r for r in read_results(output / f"{name}.jsonl")}
        per_set[name] = set_summary([records[q.index] for q in queries if q.index in records])
    return write_summary(output, settings, per_set)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        evaluate(args)
    except EvalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((Path(args.output) / "summary.md").read_text())
    return 0
