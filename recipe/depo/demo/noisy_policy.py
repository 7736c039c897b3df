"""The CPU learning demo's policy: the tiny Qwen2 model warm-started to be unreliable.

``recipe.depo.demo.tiny_policy``'s warm start is trained on correct answers until it sits at the
supervised optimum of what 0.8M parameters can represent: its misses are missing skill, which a
few dozen RL steps cannot add, so GRPO only sharpens it (issue 26's probes: sampled accuracy
30 -> 25% over 40 steps). RL on a real model mostly does something else first: the skill is there
but the policy does not reliably deliver it in the form the verifier accepts, and RL moves
probability onto the behaviour that is rewarded.

This warm start reproduces that on CPU. The same architecture and tokenizer are fine-tuned on
targets that, with probability ``unboxed``, write the right answer bare (``13``) instead of
``\\boxed{13}``; the reward accepts only a boxed answer, exactly as the demo's verifier (and
math-verify's boxed extraction on real runs) does. Sampled at temperature 1 the policy leaves most
answers unboxed, so every tier starts low; RL learns to box, and a tier's accuracy then climbs
toward what the policy can compute there. Prompts drift as in real training: the 1-digit tiers
from inside DEPO's window to too easy, 2d+1d from too hard into the window, while the top tiers
(carries the model cannot see ahead) stay always wrong -- the prompts an estimator should learn to
skip. Difficulty stays readable from the prompt text (digits and operands give the tier).
An earlier recipe (near-miss answers, ``noise``; still settable) did not learn through verl
(docs/compare.md, "Learning on CPU", keeps what was measured).

Cached like the tiny policy (``$DEPO_CPU_CACHE``, default ``~/.cache/depo-verl``), under
``noisy-policy-<hash>``::

    python -m recipe.depo.demo.noisy_policy [--cache-dir DIR] [--seed S] [--eval]

prints the model directory on the last line of stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from recipe.depo.demo.tiny_policy import (
    TinyPolicySpec,
    answer_sft,
    build_model,
    build_threads,
    build_tokenizer,
    chat_prompt_ids,
    default_cache_root,
    ensure_tiny_policy,
    publish,
)

FORMAT_VERSION = 2

# Share of near-miss warm-start targets per tier. Zero by default: a policy unreliable this way did
# not learn through verl's GRPO on CPU (docs/compare.md, "Learning on CPU"); the setting stays for
# that comparison.
NOISE: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
# Share of warm-start targets written bare (no \\boxed{}), which the reward scores 0. At 0.7 the
# policy's sampled accuracy starts at ~4% and plain GRPO through verl reached ~16% in 30 steps
# (docs/compare.md); 0.8 also degraded what the policy computes, 0.5 left too little to learn.
UNBOXED = 0.7
# how far a wrong target lands from the right answer (never 0)
NEAR_MISS: tuple[int, ...] = (-3, -2, -1, 1, 2, 3)


RECIPES = ("finetune", "scratch")


@dataclass(frozen=True)
class NoisyPolicySpec:
    """Everything that determines the cached model; hashed into its directory name."""

    # the architecture and tokenizer, and for ``finetune`` the model it starts from
    base: TinyPolicySpec = TinyPolicySpec()
    seed: int = 0
    # finetune (default): ``base`` (trained on boxed answers only) fine-tuned on the mixed-format
    #   targets. Its bare answers, a form it never learned to compute in, come out mostly wrong, so
    #   learning to box lifts it only to what its boxed answers compute (~14% of sampled answers
    #   state the right number, against ~5% right and boxed, on the machine of docs/compare.md).
    # scratch: the base's architecture trained from initialisation on those targets, so the skill
    #   is learned in both forms and boxing is nearly all RL has to add (~25% stated right against
    #   ~7%); settings ``NoisyPolicySpec.scratch()``. Not the default: as a probe (one prompt per
    #   tier) GRPO gained no more from it (docs/compare.md, "Earlier measurements").
    recipe: str = "finetune"
    steps: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    tier_weights: tuple[float, ...] = (2.0, 2.0, 3.0, 2.0, 1.0, 0.5)
    noise: tuple[float, ...] = NOISE
    unboxed: float = UNBOXED
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {', '.join(RECIPES)}, got {self.recipe!r}")

    @classmethod
    def scratch(cls, **overrides) -> NoisyPolicySpec:
        """The scratch recipe at the base's own supervised schedule (600 steps at 3e-3)."""
        base = overrides.get("base", TinyPolicySpec())
        return cls(**{"recipe": "scratch", "steps": base.steps, "lr": base.lr, **overrides})

    def digest(self) -> str:
        fields = dataclasses.asdict(self)
        if fields["recipe"] == "finetune":  # the recipe before the field existed: its caches stay valid
            del fields["recipe"]
        payload = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


def noisy_target(rng: random.Random, tier: int, value: int, noise: tuple[float, ...]) -> int:
    """The warm start's target for a problem whose answer is ``value``: a near miss with the tier's
    probability, else the answer."""
    if rng.random() < noise[tier]:
        return value + rng.choice(NEAR_MISS)
    return value


def target_text(rng: random.Random, value: int, unboxed: float) -> str:
    """The warm start's response for ``value``: bare with probability ``unboxed``, else boxed."""
    from recipe.depo.demo.arithmetic_task import answer_text

    return str(value) if rng.random() < unboxed else answer_text(value)


def bare_value(answer: str) -> int | None:
    """The integer an answer states, boxed or bare (``\\boxed{-3}`` and ``-3`` give -3), else None."""
    text = answer.strip()
    if text.startswith("\\boxed{") and text.endswith("}"):
        text = text[len("\\boxed{") : -1]
    try:
        return int(text)
    except ValueError:
        return None


def warm_start(spec: NoisyPolicySpec, model, tokenizer, log_every: int = 50) -> list[float]:
    """Supervised answer-only training on generated problems with noisy targets; the loss curve."""
    rng = random.Random(spec.seed + 29)
    format_rng = random.Random(spec.seed + 7)
    return answer_sft(
        model,
        tokenizer,
        seed=spec.seed,
        steps=spec.steps,
        batch_size=spec.batch_size,
        lr=spec.lr,
        tier_weights=spec.tier_weights,
        target=lambda tier, value: target_text(format_rng, noisy_target(rng, tier, value, spec.noise), spec.unboxed),
        tag="noisy-policy",
        log_every=log_every,
    )


@torch.no_grad()
def sampled_tier_accuracy(
    model, tokenizer, per_tier: int = 50, samples: int = 4, temperature: float = 1.0, seed: int = 12345
) -> dict[int, dict[str, float]]:
    """Greedy and sampled (mean over ``samples``) accuracy per tier on fresh problems, scored by
    the project's reward function; ``sampled_value`` counts a sampled answer whose number is right
    whether boxed or not (what the policy can compute, the ceiling of learning to box)."""
    from recipe.depo.demo.arithmetic_task import TIERS, make_problem, prompt_for
    from recipe.depo.reward import compute_score

    rng = random.Random(seed)
    torch.manual_seed(seed)
    out: dict[int, dict[str, float]] = {}
    for tier in range(len(TIERS)):
        problems = [make_problem(rng, tier) for _ in range(per_tier)]
        prompts = [chat_prompt_ids(tokenizer, prompt_for(q)) for q, _ in problems]
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            mask[row, width - len(ids) :] = 1
        scores = {}
        for name, kwargs, reps in (
            ("greedy", {"do_sample": False}, 1),
            ("sampled", {"do_sample": True, "temperature": temperature, "top_k": 0}, samples),
        ):
            hits = value_hits = 0.0
            for _ in range(reps):
                generated = model.generate(
                    input_ids=input_ids,
                    attention_mask=mask,
                    max_new_tokens=16,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                    **kwargs,
                )
                answers = tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
                hits += sum(
                    float(compute_score("arithmetic", a, str(v))["acc"])
                    for a, (_, v) in zip(answers, problems, strict=True)
                )
                value_hits += sum(bare_value(a) == v for a, (_, v) in zip(answers, problems, strict=True))
            scores[name] = round(hits / (per_tier * reps), 3)
            if name == "sampled":
                scores["sampled_value"] = round(value_hits / (per_tier * reps), 3)
        out[tier] = scores
    return out


def policy_dir(spec: NoisyPolicySpec, cache_root: str | os.PathLike | None = None) -> Path:
    root = Path(cache_root) if cache_root else default_cache_root()
    return root / f"noisy-policy-{spec.digest()}"


def ensure_noisy_policy(
    spec: NoisyPolicySpec | None = None, cache_root: str | os.PathLike | None = None, evaluate: bool = True
) -> Path:
    """Return the cached warm-started policy directory, building it first if needed."""
    spec = spec or NoisyPolicySpec()
    target = policy_dir(spec, cache_root)
    if (target / "depo_noisy_policy.json").exists():
        return target
    if target.parent.exists() and not target.parent.is_dir():
        raise NotADirectoryError(f"cache root {target.parent} is not a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with build_threads():
        if spec.recipe == "finetune":
            base_dir = ensure_tiny_policy(spec.base, cache_root, evaluate=False)
            tokenizer = AutoTokenizer.from_pretrained(base_dir)
            model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        else:
            base_dir = None
            tokenizer = build_tokenizer()
            model = build_model(spec.base, tokenizer)
        losses = warm_start(spec, model, tokenizer)
        info = {
            "spec": dataclasses.asdict(spec),
            "final_loss": sum(losses[-50:]) / min(50, len(losses)),
            "base": str(base_dir) if base_dir else None,
            "train_seconds": round(time.time() - started, 1),
            "parameters": sum(p.numel() for p in model.parameters()),
        }
        if evaluate:
            info["tier_accuracy"] = sampled_tier_accuracy(model, tokenizer, per_tier=40)
    publish(target, model, tokenizer, "depo_noisy_policy.json", info)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recipe.depo.demo.noisy_policy",
        description="Build (or find) the cached noisy-warm-start policy of the CPU learning demo.",
    )
    parser.add_argument("--cache-dir", default=None, help="cache root (default $DEPO_CPU_CACHE or ~/.cache/depo-verl)")
    parser.add_argument("--seed", type=int, default=NoisyPolicySpec.seed)
    parser.add_argument("--recipe", choices=RECIPES, default="finetune", help="see NoisyPolicySpec.recipe")
    parser.add_argument("--eval", action="store_true", help="print greedy and sampled accuracy per tier")
    args = parser.parse_args(argv)
    spec = NoisyPolicySpec(seed=args.seed) if args.recipe == "finetune" else NoisyPolicySpec.scratch(seed=args.seed)
    try:
        path = ensure_noisy_policy(spec, args.cache_dir)
    except (NotADirectoryError, FileExistsError) as exc:
        print(f"error: --cache-dir: {exc}", file=sys.stderr)
        return 2
    info = json.loads((path / "depo_noisy_policy.json").read_text())
    if args.eval and "tier_accuracy" in info:
        print(f"[noisy-policy] accuracy per tier: {info['tier_accuracy']}", file=sys.stderr)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
