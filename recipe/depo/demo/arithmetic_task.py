"""The CPU demo's task itself: seeded integer arithmetic with graded difficulty tiers.

The demo's policies (``tiny_policy``, ``noisy_policy``) are warm-started on it, and
``data_prep.arithmetic`` writes it to parquet; it lives here so that the recipe never imports
``data_prep`` (the builders import the recipe, not the reverse).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Tier:
    name: str
    digits: tuple[int, ...]  # digits of each operand, in order
    ops: str  # operator choices between consecutive operands


TIERS: tuple[Tier, ...] = (
    Tier("1d+1d", (1, 1), "+"),
    Tier("1d-1d", (1, 1), "-"),
    Tier("2d+1d", (2, 1), "+"),
    Tier("2d+-2d", (2, 2), "+-"),
    Tier("3d+-3d", (3, 3), "+-"),
    Tier("4x3d", (3, 3, 3, 3), "+-"),
)


def prompt_for(question: str) -> str:
    # Short on purpose: the tiny policy tokenises character by character.
    return f"{question}=?"


def _operand(rng: random.Random, digits: int) -> int:
    low = 0 if digits == 1 else 10 ** (digits - 1)
    return rng.randint(low, 10**digits - 1)


def make_problem(rng: random.Random, tier_index: int) -> tuple[str, int]:
    """One problem of ``TIERS[tier_index]``: its text (e.g. ``"37-12"``) and its integer value."""
    if not 0 <= tier_index < len(TIERS):
        raise ValueError(f"tier {tier_index} out of range: valid tiers are 0..{len(TIERS) - 1}")
    tier = TIERS[tier_index]
    operands = [_operand(rng, d) for d in tier.digits]
    text = str(operands[0])
    value = operands[0]
    for operand in operands[1:]:
        op = rng.choice(tier.ops)
        text += f"{op}{operand}"
        value = value + operand if op == "+" else value - operand
    return text, value


def answer_text(value: int) -> str:
    """The response the warm start teaches and the reward accepts."""
    return f"\\boxed{{{value}}}"


def tier_cycle(mix: tuple[int, ...] | None) -> list[int]:
    """The repeating tier order for a mix of whole shares per tier: ``(2, 1, 1, 1, 1, 1)`` gives
    ``[0, 0, 1, 2, 3, 4, 5]``; ``None`` is one of each (round-robin)."""
    if mix is None:
        return list(range(len(TIERS)))
    if len(mix) != len(TIERS) or any(isinstance(m, bool) or not isinstance(m, int) or m < 0 for m in mix):
        raise ValueError(f"a tier mix is {len(TIERS)} whole numbers, one per tier, got {mix!r}")
    if not any(mix):
        raise ValueError(f"a tier mix needs at least one tier, got {mix!r}")
    return [tier for tier, share in enumerate(mix) for _ in range(share)]


def iter_problems(
    seed: int, count: int, tier_weights: tuple[float, ...] | None = None, tier_mix: tuple[int, ...] | None = None
) -> Iterator[tuple[int, str, int]]:
    """``count`` problems as ``(tier, question, value)``: tiers drawn at random with
    ``tier_weights``, else cycling through ``tier_mix`` (exact shares; round-robin by default)."""
    rng = random.Random(seed)
    cycle = tier_cycle(tier_mix)
    for i in range(count):
        if tier_weights is None:
            tier = cycle[i % len(cycle)]
        else:
            tier = rng.choices(range(len(TIERS)), weights=tier_weights)[0]
        question, value = make_problem(rng, tier)
        yield tier, question, value
