"""``python -m recipe.depo.evaluate``: Avg@n of a model on evaluation sets, resumable.

    python -m recipe.depo.evaluate --model CKPT/global_step_1000 --data data/eval --output RUN/eval
    python -m recipe.depo.evaluate --model Qwen/Qwen2.5-7B-Instruct --data data/eval/gsm8k.parquet \\
        --n 32 --output runs/qwen7b/eval

Writes ``OUTPUT/<set>.jsonl`` (one line per query: index, data_source, prompt_hash, n, num_correct,
acc, mean_response_length), ``OUTPUT/summary.json`` and ``OUTPUT/summary.md`` (per set Avg@n in %,
and their unweighted mean ``Avg`` as in Table 1). Rerunning the same command skips the queries
already written; the settings a folder was started with are kept in ``OUTPUT/eval_config.json``
and a rerun with different ones is refused. The summary always covers every result in the folder
(a ``--limit`` smoke run cannot shrink a finished one); a set with results for only part of its
queries is marked partial. One evaluate at a time writes to a folder (a lock on the folder).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from recipe.depo.evaluate.backends import BACKENDS, HFBackend, Sampling, VLLMBackend, chat_ids, choose_backend
from recipe.depo.evaluate.backends import query_seed as make_seed
from recipe.depo.evaluate.data import EvalError, EvalQuery, load_set, parquet_files
from recipe.depo.evaluate.model import MERGE_MARKER, check_merge_target, loadable_path, locate_model
from recipe.depo.evaluate.results import QueryResult, append_results, read_results, set_summary, write_summary
from recipe.depo.fsutil import try_lock_dir, unwritable_dir_reason, write_text_atomic

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
    p.add_argument(
        "--limit", type=int, default=None, help="first N queries per set (smoke runs; the summary covers the folder)"
    )
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="vLLM tensor parallelism")
    p.add_argument(
        "--enforce-eager",
        action="store_true",
        help="vLLM without compilation or CUDA graphs: a faster start for short evaluations (and on CPU)",
    )
    p.add_argument(
        "--merged-dir", default=None, help="where a verl checkpoint's merged actor goes (default OUTPUT/merged_model)"
    )
    return p


def _check_args(args: argparse.Namespace) -> None:
    for flag, value in (("--model", args.model), ("--output", args.output), ("--merged-dir", args.merged_dir)):
        if value is not None and not value.strip():
            raise EvalError(f"{flag} is empty")  # Path("") is the current folder: never write there by accident
    if not all(d.strip() for d in args.data):
        raise EvalError("--data: an empty path")
    if args.tensor_parallel_size < 1:
        raise EvalError(f"--tensor-parallel-size must be >= 1, got {args.tensor_parallel_size}")
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


def _check_settings(output: Path, settings: dict) -> bool:
    """A folder resumed with other sampling settings would mix two evaluations: refuse. True when
    the folder already has its settings file (written only once the model has loaded)."""
    path = output / CONFIG_FILE
    if not path.exists():
        return False
    try:
        stored = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise EvalError(f"{path} is not a readable JSON file; remove it or use a fresh --output") from None
    if not isinstance(stored, dict):
        raise EvalError(f"{path} is not a JSON object; remove it or use a fresh --output")
    for key in RESULT_SETTINGS:
        if stored.get(key) != settings[key]:
            raise EvalError(
                f"--output {output} was started with {key}={stored.get(key)!r}, this run has {settings[key]!r} "
                f"(see {path}); use a fresh --output"
            )
    return True


def _check_output(output: Path) -> None:
    """Before anything is loaded: the output folder can be made and written."""
    if output.exists() and not output.is_dir():
        raise EvalError(f"--output {output}: a file, not a folder")
    if (output / MERGE_MARKER).exists():
        raise EvalError(f"--output {output}: a merged model folder (a later merge replaces it, results and all)")
    reason = unwritable_dir_reason(output)
    if reason:
        raise EvalError(f"--output {output}: {reason}")


def _check_merged_dir(merged: Path, output: Path, set_names: Sequence[str]) -> None:
    """The merged model must not be (or hold) the results: a later merge replaces its folder."""
    m, o = merged.resolve(), output.resolve()
    if m == o or m in o.parents:
        raise EvalError(
            f"--merged-dir {merged} is (or contains) --output {output}: a later merge would replace the results; "
            "give the merged model a folder of its own (default: OUTPUT/merged_model)"
        )
    if m.parent == o and m.name in {CONFIG_FILE, "summary.json", "summary.md", *(f"{s}.jsonl" for s in set_names)}:
        raise EvalError(f"--merged-dir {merged}: that name is one of evaluate's own files in --output")
    check_merge_target(merged)


def _load_backend(args: argparse.Namespace, located, backend_name: str, merged_dir: Path):
    """The model, merged first when it is a verl checkpoint; a model that does not load is one line."""
    try:
        path = loadable_path(located, merged_dir)
        if backend_name == "vllm":
            return VLLMBackend(
                path, tensor_parallel_size=args.tensor_parallel_size, seed=args.seed, enforce_eager=args.enforce_eager
            )
        return HFBackend(path)
    except EvalError:
        raise
    except Exception as exc:  # transformers / vLLM / verl's merger: OSError, ValueError, KeyError, ...
        first = (str(exc).strip().splitlines() or [""])[0]
        raise EvalError(f"--model {args.model}: the model did not load ({type(exc).__name__}: {first})") from exc


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


def _earlier_sets(output: Path, current: set[str]) -> dict[str, dict]:
    """Sets an earlier run wrote into this folder that this run's --data does not name: their
    results stay in the summary (with the size the earlier summary recorded, when it did)."""
    try:
        previous = json.loads((output / "summary.json").read_text()).get("sets") or {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        previous = {}
    earlier = {}
    for path in sorted(output.glob("*.jsonl")):
        if path.stem in current or path.name.startswith(".") or not path.is_file():
            continue
        records = {r["index"]: r for r in read_results(path)}
        entry = previous.get(path.stem) if isinstance(previous, dict) else None
        total = entry.get("total") if isinstance(entry, dict) else None
        earlier[path.stem] = {"records": list(records.values()), "total": total if isinstance(total, int) else None}
    return earlier


def _first_missing(path: Path) -> Path | None:
    """The top folder ``mkdir -p path`` would create (None when ``path`` exists)."""
    if path.exists():
        return None
    while not path.parent.exists():
        path = path.parent
    return path


def _remove_empty(path: Path, top: Path) -> None:
    """Remove the folders from ``path`` up to ``top`` that a failed start created and left empty."""
    while True:
        try:
            path.rmdir()
        except OSError:
            return
        if path == top:
            return
        path = path.parent


def evaluate(args: argparse.Namespace) -> dict:
    _check_args(args)
    backend_name = choose_backend(args.backend)
    located = locate_model(args.model)
    files = parquet_files(args.data)
    full = {name: load_set(file) for name, file in files.items()}
    sets = {name: queries[: args.limit] if args.limit else queries for name, queries in full.items()}
    for name, queries in sets.items():
        for query in {q.data_source: q for q in queries}.values():  # one query per data source
            _check_reward(name, files[name], query)
    output = Path(args.output)
    _check_output(output)
    merged_dir = Path(args.merged_dir) if args.merged_dir else output / "merged_model"
    if located.kind == "verl":
        _check_merged_dir(merged_dir, output, list(files))
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
    created = _first_missing(output)
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EvalError(f"--output {output}: cannot create it ({exc.strerror or exc})") from None
    lock = try_lock_dir(output)
    if lock is None:
        raise EvalError(
            f"--output {output}: another evaluate is writing to this folder (it holds the folder's lock); "
            "wait for it to finish or use another --output"
        )
    try:
        return _evaluate_locked(args, located, backend_name, output, merged_dir, settings, full, sets)
    finally:
        os.close(lock)
        if created is not None:
            _remove_empty(output, created)  # a start that failed before writing anything leaves nothing


def _evaluate_locked(args, located, backend_name, output, merged_dir, settings, full, sets) -> dict:
    has_settings = _check_settings(output, settings)
    if not has_settings:
        stray = sorted(p.name for p in output.glob("*.jsonl") if not p.name.startswith("."))
        if stray:
            raise EvalError(
                f"--output {output} holds {stray[0]} but no {CONFIG_FILE}: not an evaluate folder, or one whose "
                "settings were lost; use a fresh --output"
            )
    # every result already in the folder, checked against the whole set (not only --limit's part)
    done = {name: _done(name, output / f"{name}.jsonl", queries) for name, queries in full.items()}
    earlier = _earlier_sets(output, set(full))
    pending = {name: [q for q in queries if q.index not in done[name]] for name, queries in sets.items()}

    if any(pending.values()):
        from tqdm import tqdm

        backend = _load_backend(args, located, backend_name, merged_dir)
        if not has_settings:  # only now: a model that does not load leaves no settings to block the rerun
            write_text_atomic(output / CONFIG_FILE, json.dumps(settings, indent=2) + "\n")
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

    # The summary covers every result in the folder, whatever part of it this run generated: a
    # `--limit 1` smoke run into a finished folder leaves the finished summary as it was.
    per_set = {}
    for name, queries in full.items():
        records = _done(name, output / f"{name}.jsonl", queries)
        per_set[name] = set_summary(list(records.values()), total=len(queries))
    for name, earlier_set in earlier.items():
        per_set[name] = set_summary(earlier_set["records"], total=earlier_set["total"])
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
