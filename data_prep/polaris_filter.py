"""Polaris baseline: an offline difficulty filter on a training parquet, using the starting model.

    python -m data_prep.polaris_filter --input data/dapo_math_17k.parquet --output data/dapo_polaris.parquet \
        --model Qwen/Qwen2.5-1.5B-Instruct --work-dir work/polaris_dapo [--n 8] [--backend auto]

For every prompt it samples ``--n`` responses with the model the RL run starts from, scores them
with recipe.depo.reward (the same reward the run uses), and records the pass rate. What Polaris
does (An et al., 2025, "POLARIS", hkunlp blog): 8 samples per problem from the model to be
trained, problems solved 8/8 removed, everything else kept, which leaves a distribution skewed
toward hard problems (their "mirrored J shape"). Our default rule is exactly that. Two knobs
make the rule configurable: ``--drop-all-wrong`` also removes 0/n problems (which give GRPO no
signal either), and ``--hard-skew A`` keeps a partially solved problem with probability
(1 - pass_rate)^A (A = 0: keep all, Polaris; A > 0: thin out the easier ones further).

Generation runs through vLLM when it is importable and a GPU is present, otherwise through
transformers (batched ``generate`` with sampling), which is what the CPU tests use. Progress is
written to ``--work-dir`` in shards of ``--shard-size`` prompts, each written atomically; a rerun
with the same settings skips finished shards, so an interrupted job resumes where it stopped.
Each shard is sampled with its own seed, so a resumed run gives the same result as one that
never stopped. The output keeps the kept rows unchanged plus ``pass_rate``, ``n_correct`` and
``n_samples`` columns; ``--all-output`` writes every row with its ``polaris_keep`` decision.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from data_prep.common import (
    REQUIRED_COLUMNS,
    BuildSummary,
    DataPrepError,
    add_common_args,
    as_plain,
    check_outputs,
    check_writable_dir,
    publish_parquets,
    read_table,
    require_columns,
    run_cli,
    write_parquet_atomic,
)

META_FILE = "meta.json"


# ---------------------------------------------------------------- keep rule


@dataclass(frozen=True)
class KeepRule:
    drop_all_correct: bool = True
    drop_all_wrong: bool = False
    hard_skew: float = 0.0

    def keep(self, pass_rate: float, *, seed: int, row: int) -> tuple[bool, str]:
        """(keep?, reason). Random thinning is keyed on (seed, row) so it does not depend on the
        order or the sharding of the run."""
        if pass_rate >= 1.0:
            return (False, "all samples correct") if self.drop_all_correct else (True, "kept")
        if pass_rate <= 0.0:
            return (False, "all samples wrong") if self.drop_all_wrong else (True, "kept")
        if self.hard_skew > 0:
            keep_probability = (1.0 - pass_rate) ** self.hard_skew
            if random.Random(f"{seed}:{row}").random() >= keep_probability:
                return False, "thinned by --hard-skew"
        return True, "kept"


# ---------------------------------------------------------------- generation backends


class Generator(Protocol):
    def generate(self, prompts: list[list[dict[str, str]]], n: int, seed: int) -> list[list[str]]:
        """n sampled responses for each chat prompt."""


@dataclass
class SamplingSettings:
    n: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 10240


def render_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    # base models without a chat template: the user text alone
    return "\n\n".join(m["content"] for m in messages)


class TransformersGenerator:
    """CPU (or single-GPU) sampling with ``generate``; slow but needs nothing beyond transformers."""

    def __init__(
        self, model_path: str, sampling: SamplingSettings, batch_size: int = 8, tokenizer_path: str | None = None
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.sampling = sampling
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path or model_path)
        # left padding so every prompt ends where generation starts
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(self.device).eval()

    def generate(self, prompts: list[list[dict[str, str]]], n: int, seed: int) -> list[list[str]]:
        torch = self.torch
        torch.manual_seed(seed)
        texts = [render_prompt(self.tokenizer, p) for p in prompts]
        greedy = self.sampling.temperature <= 0
        out: list[list[str]] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            kwargs = dict(max_new_tokens=self.sampling.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id)
            if greedy:
                kwargs.update(do_sample=False, num_return_sequences=1)
            else:
                kwargs.update(
                    do_sample=True,
                    temperature=self.sampling.temperature,
                    top_p=self.sampling.top_p,
                    top_k=0,
                    num_return_sequences=n,
                )
            with torch.no_grad():
                generated = self.model.generate(**enc, **kwargs)
            new_tokens = generated[:, enc["input_ids"].shape[1] :]
            decoded = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            per_prompt = 1 if greedy else n
            for j in range(len(chunk)):
                samples = decoded[j * per_prompt : (j + 1) * per_prompt]
                out.append(samples * n if greedy else samples)
        return out


class VLLMGenerator:
    def __init__(
        self,
        model_path: str,
        sampling: SamplingSettings,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.85,
        tokenizer_path: str | None = None,
    ):
        from vllm import LLM

        self.sampling = sampling
        self.llm = LLM(
            model=model_path,
            tokenizer=tokenizer_path,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
        )
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, prompts: list[list[dict[str, str]]], n: int, seed: int) -> list[list[str]]:
        from vllm import SamplingParams

        greedy = self.sampling.temperature <= 0
        params = [
            SamplingParams(
                # vLLM refuses n > 1 with greedy decoding; one greedy answer stands for all n
                n=1 if greedy else n,
                temperature=max(self.sampling.temperature, 0.0),
                top_p=self.sampling.top_p,
                max_tokens=self.sampling.max_new_tokens,
                seed=seed + i,
            )
            for i in range(len(prompts))
        ]
        texts = [render_prompt(self.tokenizer, p) for p in prompts]
        results = self.llm.generate(texts, params, use_tqdm=False)
        samples = [[choice.text for choice in result.outputs] for result in results]
        return [s * n for s in samples] if greedy else samples


def vllm_usable() -> bool:
    try:
        import torch
        import vllm  # noqa: F401
    except Exception:
        return False
    return torch.cuda.is_available()


def make_generator(
    backend: str,
    model_path: str,
    sampling: SamplingSettings,
    *,
    batch_size: int = 8,
    tensor_parallel_size: int = 1,
    gpu_memory_utilization: float = 0.85,
    tokenizer_path: str | None = None,
) -> Generator:
    if backend == "auto":
        backend = "vllm" if vllm_usable() else "transformers"
    if backend == "vllm":
        if not vllm_usable():
            raise DataPrepError("--backend vllm needs vllm installed and a CUDA GPU; use --backend transformers")
        return VLLMGenerator(model_path, sampling, tensor_parallel_size, gpu_memory_utilization, tokenizer_path)
    return TransformersGenerator(model_path, sampling, batch_size=batch_size, tokenizer_path=tokenizer_path)


# ---------------------------------------------------------------- resumable scoring run


def _fingerprint(frame: pd.DataFrame) -> str:
    """Identity of the input rows, so a work dir is never resumed against different data."""
    digest = hashlib.sha256()
    for prompt, reward_model in zip(frame["prompt"], frame["reward_model"]):
        digest.update(json.dumps(as_plain(prompt), sort_keys=True, ensure_ascii=False).encode())
        digest.update(json.dumps(as_plain(reward_model), sort_keys=True, ensure_ascii=False).encode())
    return digest.hexdigest()


def _check_meta(work_dir: Path, meta: dict[str, Any]) -> bool:
    """Refuse a work dir whose shards were sampled with other settings. Returns whether its
    ``meta.json`` already holds these settings. A ``meta.json`` without any shard (a run that
    stopped before its first shard, e.g. on a model that would not load) guards nothing and
    does not block the corrected rerun; shards without a ``meta.json`` cannot be trusted."""
    path = work_dir / META_FILE
    has_shards = work_dir.is_dir() and any(work_dir.glob("shard-*.parquet"))
    if not path.exists():
        if has_shards:
            raise DataPrepError(
                f"--work-dir {work_dir} holds shards but no {META_FILE} (their settings are unknown); "
                "use a new --work-dir or delete this one"
            )
        return False
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        if has_shards:
            raise DataPrepError(
                f"--work-dir {work_dir}: {META_FILE} cannot be read ({exc}); delete the work dir"
            ) from None
        return False
    if not isinstance(saved, dict):
        saved = {}
    changed = {k: (saved.get(k), v) for k, v in meta.items() if saved.get(k) != v}
    if changed and has_shards:
        details = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
        raise DataPrepError(
            f"--work-dir {work_dir} holds a run with different settings ({details}); "
            "use a new --work-dir or delete this one"
        )
    return not changed


def _write_meta(work_dir: Path, meta: dict[str, Any]) -> None:
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / META_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(path)


def _shard_path(work_dir: Path, shard: int) -> Path:
    return work_dir / f"shard-{shard:05d}.parquet"


def score_responses(row: dict[str, Any], responses: list[str]) -> int:
    from recipe.depo.reward import compute_score

    truth = as_plain(row["reward_model"])["ground_truth"]
    extra_info = as_plain(row.get("extra_info")) or {}
    return int(sum(compute_score(row["data_source"], r, truth, extra_info)["acc"] for r in responses))


def compute_pass_rates(
    frame: pd.DataFrame,
    generator_factory: Callable[[], Generator],
    *,
    work_dir: str | Path,
    sampling: SamplingSettings,
    shard_size: int,
    seed: int,
    model: str,
    save_responses: bool = False,
    on_shard_done: Callable[[int], None] | None = None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Per-row pass rates (row, n_samples, n_correct, pass_rate), shard by shard, resuming from
    ``work_dir``. The generator is only built when some shard still has to run."""
    from recipe.depo.reward import compute_score

    work_dir = Path(work_dir)
    for source in sorted(set(frame["data_source"])):
        compute_score(source, "", "0")  # an unknown data_source fails now, not after hours of sampling
    meta = {
        "rows": len(frame),
        "fingerprint": _fingerprint(frame),
        "model": model,
        "n": sampling.n,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_new_tokens": sampling.max_new_tokens,
        "shard_size": shard_size,
        "seed": seed,
    }
    meta_written = _check_meta(work_dir, meta)
    num_shards = (len(frame) + shard_size - 1) // shard_size
    stats = {"shards": num_shards, "shards_resumed": 0, "shards_run": 0}
    generator: Generator | None = None
    records = frame.to_dict("records")
    from tqdm import tqdm

    for shard in tqdm(range(num_shards), desc="polaris shards", leave=False):
        path = _shard_path(work_dir, shard)
        if path.exists():
            stats["shards_resumed"] += 1
            continue
        if generator is None:
            generator = generator_factory()
        if not meta_written:
            # only now that the model has loaded: a run that cannot start leaves nothing behind
            _write_meta(work_dir, meta)
            meta_written = True
        lo, hi = shard * shard_size, min(len(frame), (shard + 1) * shard_size)
        prompts = [[dict(m) for m in as_plain(records[i]["prompt"])] for i in range(lo, hi)]
        # one seed per shard: a resumed run samples exactly what an uninterrupted one would
        samples = generator.generate(prompts, sampling.n, seed * 1_000_003 + shard)
        if len(samples) != hi - lo or any(len(s) != sampling.n for s in samples):
            raise RuntimeError(f"generator returned the wrong number of samples for shard {shard}")
        rows = []
        for offset, responses in enumerate(samples):
            i = lo + offset
            correct = score_responses(records[i], responses)
            row = {"row": i, "n_samples": sampling.n, "n_correct": correct, "pass_rate": correct / sampling.n}
            if save_responses:
                row["responses"] = list(responses)
            rows.append(row)
        write_parquet_atomic(pd.DataFrame(rows), path)
        stats["shards_run"] += 1
        if on_shard_done is not None:
            on_shard_done(shard)
    shards = [pd.read_parquet(_shard_path(work_dir, s)) for s in range(num_shards)]
    rates = pd.concat(shards, ignore_index=True).sort_values("row").reset_index(drop=True)
    if list(rates["row"]) != list(range(len(frame))):
        raise DataPrepError(f"--work-dir {work_dir}: shards do not cover rows 0..{len(frame) - 1}; delete it and rerun")
    return rates, stats


def apply_rule(
    frame: pd.DataFrame, rates: pd.DataFrame, rule: KeepRule, seed: int
) -> tuple[pd.DataFrame, dict[str, int]]:
    """All rows with pass_rate, n_correct, n_samples and polaris_keep columns; counts by reason."""
    out = frame.reset_index(drop=True).copy()
    out["pass_rate"] = rates["pass_rate"].astype(float).values
    out["n_correct"] = rates["n_correct"].astype(int).values
    out["n_samples"] = rates["n_samples"].astype(int).values
    decisions = [rule.keep(p, seed=seed, row=i) for i, p in enumerate(out["pass_rate"])]
    out["polaris_keep"] = [keep for keep, _ in decisions]
    reasons: dict[str, int] = {}
    for _, reason in decisions:
        reasons[reason] = reasons.get(reason, 0) + 1
    return out, reasons


def histogram_lines(scored: pd.DataFrame) -> list[str]:
    n = int(scored["n_samples"].max()) if len(scored) else 0
    counts = scored["n_correct"].value_counts().to_dict()
    total = max(1, len(scored))
    lines = ["  pass-rate distribution (n_correct / n: prompts)"]
    for k in range(n + 1):
        c = int(counts.get(k, 0))
        lines.append(f"    {k:>3}/{n}: {c:>8}  {'#' * round(40 * c / total)}")
    return lines


# ---------------------------------------------------------------- CLI


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data_prep.polaris_filter", description=__doc__.split("\n\n")[0])
    add_common_args(p, output_help="parquet of the kept rows (with pass_rate)")
    p.add_argument("--model", required=True, help="the starting policy (hub id or local path)")
    p.add_argument("--tokenizer", default=None, help="tokenizer path if not the model's own")
    p.add_argument("--work-dir", required=True, help="directory for resumable shards")
    p.add_argument("--n", type=int, default=8, help="samples per prompt (Polaris: 8)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (the RL rollouts use 1.0)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=10240, help="response budget (the paper's rollouts: 10240)")
    p.add_argument("--shard-size", type=int, default=256, help="prompts per resumable shard")
    p.add_argument("--backend", choices=["auto", "vllm", "transformers"], default="auto")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per generate() call (transformers backend)")
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="vLLM only")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.85, help="vLLM only")
    p.add_argument(
        "--drop-all-correct",
        default=True,
        action=argparse.BooleanOptionalAction,
        help="drop prompts solved n/n (Polaris; default on)",
    )
    p.add_argument("--drop-all-wrong", action="store_true", help="also drop prompts solved 0/n (not Polaris)")
    p.add_argument(
        "--hard-skew", type=float, default=0.0, help="keep partially solved prompts with prob (1-pass_rate)^A"
    )
    p.add_argument("--save-responses", action="store_true", help="keep the sampled responses in the shards")
    p.add_argument("--all-output", default=None, help="also write every row with its polaris_keep decision")
    return p


def check_arguments(args: argparse.Namespace) -> None:
    """Every number and path the run will use, before anything is read or loaded: found after the
    model has loaded (or inside generate) they would cost minutes and end in a traceback."""
    for flag in ("n", "shard_size", "batch_size", "max_new_tokens", "tensor_parallel_size"):
        if getattr(args, flag) < 1:
            raise DataPrepError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise DataPrepError(f"--temperature must be a finite number >= 0 (0: greedy), got {args.temperature}")
    if not 0 < args.top_p <= 1:
        raise DataPrepError(f"--top-p must lie in (0, 1], got {args.top_p}")
    if not (math.isfinite(args.hard_skew) and args.hard_skew >= 0):
        raise DataPrepError(f"--hard-skew must be a finite number >= 0, got {args.hard_skew}")
    if not 0 < args.gpu_memory_utilization <= 1:
        raise DataPrepError(f"--gpu-memory-utilization must lie in (0, 1], got {args.gpu_memory_utilization}")
    work_dir = Path(args.work_dir)
    if work_dir.exists() and not work_dir.is_dir():
        raise DataPrepError(f"--work-dir {work_dir} is a file; give a directory for the resumable shards")
    check_writable_dir(work_dir, what=f"--work-dir {work_dir}")
    for flag, value in (("--model", args.model), ("--tokenizer", args.tokenizer)):
        # a path (not a hub id "org/name"), spelt as one: say so now, not as a hub error later
        if value and value.startswith((".", "/", "~")) and not Path(value).expanduser().exists():
            raise DataPrepError(f"{flag} {value}: no such file or directory")


def run(
    args: argparse.Namespace,
    generator_factory: Callable[[], Generator] | None = None,
    on_shard_done: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    check_arguments(args)
    check_outputs(
        {"--output": args.output, "--all-output": args.all_output}, args.overwrite, inputs={"--input": args.input}
    )
    frame = read_table(args.input) if args.input else None
    if frame is None:
        raise DataPrepError("--input is required: the training parquet made by one of the data_prep builders")
    require_columns(frame, REQUIRED_COLUMNS, str(args.input))
    if args.limit is not None:
        frame = frame.head(args.limit)
    sampling = SamplingSettings(
        n=args.n, temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens
    )
    if generator_factory is None:

        def generator_factory() -> Generator:
            try:
                return make_generator(
                    args.backend,
                    args.model,
                    sampling,
                    batch_size=args.batch_size,
                    tensor_parallel_size=args.tensor_parallel_size,
                    gpu_memory_utilization=args.gpu_memory_utilization,
                    tokenizer_path=args.tokenizer,
                )
            except DataPrepError:
                raise
            except Exception as exc:  # a wrong path, an unknown hub id, no network, a broken config
                what = f"--model {args.model}" + (f" (--tokenizer {args.tokenizer})" if args.tokenizer else "")
                reason = (str(exc).strip().splitlines() or [""])[0]
                raise DataPrepError(f"cannot load {what}: {type(exc).__name__}: {reason}") from None

    rates, stats = compute_pass_rates(
        frame,
        generator_factory,
        work_dir=args.work_dir,
        sampling=sampling,
        shard_size=args.shard_size,
        seed=args.seed,
        model=args.model,
        save_responses=args.save_responses,
        on_shard_done=on_shard_done,
    )
    rule = KeepRule(
        drop_all_correct=args.drop_all_correct, drop_all_wrong=args.drop_all_wrong, hard_skew=args.hard_skew
    )
    scored, reasons = apply_rule(frame, rates, rule, args.seed)
    kept = scored[scored["polaris_keep"]].drop(columns=["polaris_keep"]).reset_index(drop=True)
    if len(kept) == 0:
        raise DataPrepError(
            f"the rule {asdict(rule)} keeps no rows; pass-rate counts: {scored['n_correct'].value_counts().to_dict()}"
        )
    publish_parquets({args.output: kept, **({args.all_output: scored} if args.all_output else {})})
    summary = BuildSummary(name="polaris_filter", origin=str(args.input), rows_read=len(frame))
    for reason, count in reasons.items():
        if reason != "kept":
            summary.drops.reasons[reason] += count
    summary.rows_written[str(args.output)] = len(kept)
    if args.all_output:
        summary.rows_written[str(args.all_output)] = len(scored)
    lines = summary.lines()
    lines.insert(
        3, f"  shards            {stats['shards']} ({stats['shards_resumed']} resumed, {stats['shards_run']} run)"
    )
    lines.insert(4, f"  rule              {asdict(rule)}")
    print("\n".join(lines + histogram_lines(scored)))
    return {"kept": kept, "scored": scored, "stats": stats, "reasons": reasons}


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(run, parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
