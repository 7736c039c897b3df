"""The CPU demo's policy: a tiny Qwen2 model, a local character-level tokenizer, a short warm start.

Nothing is downloaded. The tokenizer knows the Qwen2 chat tokens (``<|im_start|>``,
``<|im_end|>``, ``<|endoftext|>``), a few whole words the chat template emits, and single
characters for everything else, so arithmetic prompts stay a few dozen tokens long. The model is
warm-started by a short supervised run on ``data_prep.arithmetic`` problems (answer only, no
working) so that RL starts from a policy that already solves the easy tiers.

The result is cached in ``$DEPO_CPU_CACHE`` (default ``~/.cache/depo-verl``) under
``tiny-policy-<hash>``, the hash covering everything that determines the weights, so a second
run reuses it. Build or locate it with::

    python -m recipe.depo.demo.tiny_policy [--cache-dir DIR] [--steps N] [--seed S] [--eval]

which prints the model directory on the last line of stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

FORMAT_VERSION = 2  # bump when the tokenizer or training recipe changes in a way the hash misses

PAD = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (PAD, IM_START, IM_END)
WORD_TOKENS = ("user", "assistant", "system", "\\boxed")

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TinyPolicySpec:
    """Everything that determines the cached model; hashed into its directory name."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    max_position_embeddings: int = 256
    seed: int = 0
    steps: int = 600
    batch_size: int = 64
    lr: float = 3e-3
    # Training mix over arithmetic_task.TIERS: mostly the lower tiers, a little of the top
    # so the policy learns the answer format everywhere without learning to solve the top.
    tier_weights: tuple[float, ...] = (2.0, 2.0, 3.0, 2.0, 1.0, 0.5)
    format_version: int = FORMAT_VERSION

    def digest(self) -> str:
        payload = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


def default_cache_root() -> Path:
    return Path(os.environ.get("DEPO_CPU_CACHE", Path.home() / ".cache" / "depo-verl"))


def _merge_chain(word: str) -> list[tuple[str, str]]:
    """BPE merges that assemble ``word`` left to right (``u s`` -> ``us``, ``us e`` -> ``use``...)."""
    return [(word[:i], word[i]) for i in range(1, len(word))]


def build_tokenizer():
    """A Qwen2Tokenizer (byte-level BPE) with the 256 byte symbols and merges only for a few words.

    It has to be a real Qwen2Tokenizer: transformers rebuilds the tokenizer of any ``qwen2`` model
    as one (whatever tokenizer_config.json says), and verl's Qwen chat handling expects its
    behaviour, e.g. "\\n" encoding to exactly one token.
    """
    from tokenizers import AddedToken, pre_tokenizers
    from transformers import Qwen2Tokenizer

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {sym: i for i, sym in enumerate(symbols)}
    merges: list[tuple[str, str]] = []
    for word in WORD_TOKENS:
        for left, right in _merge_chain(word):
            merges.append((left, right))
            vocab.setdefault(left + right, len(vocab))
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token=IM_END,
        pad_token=PAD,
        model_max_length=1024,
    )
    tokenizer.add_tokens(
        [AddedToken(tok, special=True, normalized=False) for tok in SPECIAL_TOKENS], special_tokens=True
    )
    tokenizer.padding_side = "left"
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(spec: TinyPolicySpec, tokenizer):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD),
        attn_implementation="sdpa",
        torch_dtype="float32",
    )
    torch.manual_seed(spec.seed)
    return Qwen2ForCausalLM(config)


def chat_prompt_ids(tokenizer, prompt_text: str) -> list[int]:
    messages = [{"role": "user", "content": prompt_text}]
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False))


def answer_sft(
    model,
    tokenizer,
    *,
    seed: int,
    steps: int,
    batch_size: int,
    lr: float,
    tier_weights: tuple[float, ...],
    target: Callable[[int, int], str],
    tag: str,
    log_every: int,
) -> list[float]:
    """Supervised answer-only training on generated arithmetic problems; returns the loss curve.

    ``target(tier, value)`` is the response taught for a problem (the tiny policy's boxed answer,
    the noisy policy's sometimes-bare one); only its tokens and the end token carry loss. Both
    warm starts run this loop, and their caches are keyed by spec, not code: a change here that
    moves the weights must bump both modules' FORMAT_VERSION.
    """
    from recipe.depo.demo.arithmetic_task import iter_problems, prompt_for

    torch.manual_seed(seed)
    pad_id = tokenizer.pad_token_id
    problems = iter_problems(seed=seed + 17, count=steps * batch_size, tier_weights=tier_weights)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)

    def lr_scale(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_scale)
    model.train()
    losses = []
    start = time.time()
    for step in range(steps):
        batch = []
        for tier, question, value in (next(problems) for _ in range(batch_size)):
            prompt = chat_prompt_ids(tokenizer, prompt_for(question))
            response = tokenizer.encode(target(tier, value), add_special_tokens=False) + [tokenizer.eos_token_id]
            batch.append((prompt + response, len(prompt)))
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ids, prompt_len) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
            mask[row, : len(ids)] = 1
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if log_every and (step + 1) % log_every == 0:
            print(
                f"[{tag}] warm start step {step + 1}/{steps} "
                f"loss {sum(losses[-log_every:]) / log_every:.4f} ({time.time() - start:.0f}s)",
                file=sys.stderr,
                flush=True,
            )
    model.eval()
    return losses


def warm_start(spec: TinyPolicySpec, model, tokenizer, log_every: int = 250) -> list[float]:
    """The tiny policy's warm start: correct boxed answers; returns the loss curve."""
    from recipe.depo.demo.arithmetic_task import answer_text

    return answer_sft(
        model,
        tokenizer,
        seed=spec.seed,
        steps=spec.steps,
        batch_size=spec.batch_size,
        lr=spec.lr,
        tier_weights=spec.tier_weights,
        target=lambda _tier, value: answer_text(value),
        tag="tiny-policy",
        log_every=log_every,
    )


@torch.no_grad()
def greedy_answers(model, tokenizer, prompt_texts: list[str], max_new_tokens: int = 16) -> list[str]:
    prompts = [chat_prompt_ids(tokenizer, p) for p in prompt_texts]
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for row, ids in enumerate(prompts):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        mask[row, width - len(ids) :] = 1
    out = model.generate(
        input_ids=input_ids,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)


def tier_accuracy(model, tokenizer, per_tier: int = 50, seed: int = 12345) -> dict[int, float]:
    """Greedy accuracy per tier on fresh problems, scored by the project's reward function."""
    from recipe.depo.demo.arithmetic_task import TIERS, make_problem, prompt_for
    from recipe.depo.reward import compute_score

    rng = random.Random(seed)
    accuracy = {}
    for tier in range(len(TIERS)):
        problems = [make_problem(rng, tier) for _ in range(per_tier)]
        answers = greedy_answers(model, tokenizer, [prompt_for(q) for q, _ in problems])
        scores = [compute_score("arithmetic", a, str(v))["acc"] for a, (_, v) in zip(answers, problems, strict=True)]
        accuracy[tier] = sum(float(s) for s in scores) / per_tier
    return accuracy


def policy_dir(spec: TinyPolicySpec, cache_root: str | os.PathLike | None = None) -> Path:
    root = Path(cache_root) if cache_root else default_cache_root()
    return root / f"tiny-policy-{spec.digest()}"


def publish(target: Path, model, tokenizer, info_name: str, info: dict) -> None:
    """Save a built policy as ``target``, ``info_name`` (its build record) last.

    Built beside the target and renamed: a concurrent or interrupted build never leaves a
    half-written directory that a later run would take for a finished one (callers look for
    ``info_name``). A concurrent build that finished first wins; this one is discarded.
    """
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        model.generation_config.save_pretrained(staging)
        (staging / info_name).write_text(json.dumps(info, indent=2))
        try:
            os.replace(staging, target)
        except OSError:
            if not (target / info_name).exists():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def build_threads() -> Iterator[None]:
    """torch's thread count for a warm-start build (DEPO_CPU_THREADS, default 1), given back after:
    the caller (a test session, a benchmark) keeps its own."""
    before = torch.get_num_threads()
    # One thread: on this shared 2-core machine a second torch thread fights other processes
    # for the core and made a warm-start step ~20x slower; the model is too small to gain from it.
    torch.set_num_threads(int(os.environ.get("DEPO_CPU_THREADS", "1")))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def ensure_tiny_policy(
    spec: TinyPolicySpec | None = None, cache_root: str | os.PathLike | None = None, evaluate: bool = True
) -> Path:
    """Return the cached warm-started policy directory, building it first if needed."""
    spec = spec or TinyPolicySpec()
    target = policy_dir(spec, cache_root)
    if (target / "depo_tiny_policy.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with build_threads():
        tokenizer = build_tokenizer()
        model = build_model(spec, tokenizer)
        losses = warm_start(spec, model, tokenizer)
        info = {
            "spec": dataclasses.asdict(spec),
            "final_loss": sum(losses[-50:]) / min(50, len(losses)),
            "train_seconds": round(time.time() - started, 1),
            "parameters": sum(p.numel() for p in model.parameters()),
        }
        if evaluate:
            info["greedy_tier_accuracy"] = tier_accuracy(model, tokenizer)
    publish(target, model, tokenizer, "depo_tiny_policy.json", info)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recipe.depo.demo.tiny_policy",
        description="Build (or find) the cached tiny warm-started policy.",
    )
    parser.add_argument("--cache-dir", default=None, help="cache root (default $DEPO_CPU_CACHE or ~/.cache/depo-verl)")
    parser.add_argument("--steps", type=int, default=TinyPolicySpec.steps)
    parser.add_argument("--seed", type=int, default=TinyPolicySpec.seed)
    parser.add_argument("--eval", action="store_true", help="print greedy accuracy per tier")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    threads = os.environ.get("DEPO_CPU_THREADS", "1")
    if not threads.isdigit() or int(threads) < 1:
        parser.error(f"$DEPO_CPU_THREADS must be a positive integer, got {threads!r}")
    from recipe.depo.fsutil import unwritable_dir_reason

    root = Path(args.cache_dir) if args.cache_dir else default_cache_root()
    reason = unwritable_dir_reason(root)
    if reason:
        where = "--cache-dir" if args.cache_dir else "$DEPO_CPU_CACHE" if "DEPO_CPU_CACHE" in os.environ else "cache"
        parser.error(f"{where} {root}: {reason}")
    spec = TinyPolicySpec(steps=args.steps, seed=args.seed)
    path = ensure_tiny_policy(spec, args.cache_dir)
    info = json.loads((path / "depo_tiny_policy.json").read_text())
    if args.eval and "greedy_tier_accuracy" in info:
        print(f"[tiny-policy] greedy accuracy per tier: {info['greedy_tier_accuracy']}", file=sys.stderr)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
