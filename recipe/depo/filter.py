"""DEPO's pre-rollout selection: which drawn prompts are rolled out this step (pure Python).

Per call, ``DifficultyFilter.select(needed, step, draw)`` returns exactly ``needed`` prompts:

1. Prompts carried over from an earlier call come first (they were kept then; nothing drawn is
   thrown away just because the batch was already full).
2. Then fresh candidates, drawn (and scored by the caller) in chunks through ``draw``. A
   candidate is kept when the filter is warming up (every prompt is kept for the first
   ``warmup_steps`` steps, so the estimator learns from an unfiltered population first), when
   its predicted accuracy lies in the window, or -- outside the window -- with probability
   ``explore_rate`` (the estimator otherwise never sees a label for what it rejects, and its
   errors there would never be corrected). Kept candidates beyond ``needed`` are carried over.
3. Once ``max_scan`` fresh candidates were scored in this call, no more are drawn: the batch is
   completed with this call's rejected candidates whose predictions lie closest to the window's
   centre ("fill"), so a step never stalls on an estimator that rejects everything.

The only state is the carry-over queue, running counters and the exploration RNG; all but the
queue's payloads is plain JSON (``state_dict``) so a checkpoint restores the exact same future
decisions. Prompts are identified by opaque string keys; each candidate may carry a payload (the
caller's dataset row), which rides along into the kept list or the carry-over queue, so there is
exactly one record of what is carried over.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from verl.base_config import BaseConfig

from recipe.depo.config_fields import FieldChecks, build, field_names, is_number
from recipe.depo.selectors import SelectorConfig, build_selector

WARMUP = "warmup"
WINDOW = "window"
EXPLORE = "explore"
FILL = "fill"
# Rolled out because the drift guard found the predictions miscalibrated (recipe/depo/audit.py).
GUARD = "guard"
REASONS = (WARMUP, WINDOW, EXPLORE, FILL, GUARD)
MODES = ("filter", "shadow")

_COUNTERS = ("calls", "scanned", "kept", "rejected", "explored", "filled", "cap_hits")
# max_scan=null: this many times data.train_batch_size.
DEFAULT_SCAN_FACTOR = 8


@dataclass
class FilterConfig(BaseConfig):
    """``depo.filter`` in depo_trainer.yaml. ``max_scan=None`` means 8 x ``data.train_batch_size``
    (``resolved``; the filter itself needs a number)."""

    config_key: ClassVar[str] = "depo.filter"

    # false with depo.enable=true: no estimator and no pre-rollout filter (read by the trainer).
    enable: bool = True
    window: tuple[float, float] = (0.15, 0.85)
    warmup_steps: int = 100
    explore_rate: float = 0.0
    # Fresh candidates scored per call before falling back to "fill"; must be >= the batch.
    max_scan: int | None = None
    seed: int = 0
    # Which selector decides (depo: the estimator's window; greso, posterior: a prompt's own
    # history, no estimator; hybrid: both) and each one's settings (recipe/depo/selectors).
    selector: SelectorConfig = field(default_factory=SelectorConfig)
    # filter: the selector decides what is rolled out. shadow: verl's own batch is rolled out (the
    # run trains as GRPO would) and the selector's would-be rejections are scored against the
    # outcomes (depo/shadow/*): trust the scorer on your data before it rejects anything.
    mode: str = "filter"
    # Drift guard: when the calibration error over the last guard_steps steps' groups passes
    # guard_threshold, roll out everything (reason "guard") until it is back under. 0: off.
    guard_threshold: float = 0.0
    guard_steps: int = 10

    def __post_init__(self) -> None:
        check = FieldChecks(self)
        check.boolean("enable")
        if not isinstance(self.selector, SelectorConfig):  # a plain mapping, e.g. from YAML
            object.__setattr__(self, "selector", build(SelectorConfig, self.selector, check.problems))
        window = self.window
        if isinstance(window, (str, bytes)) or not hasattr(window, "__len__") or len(window) != 2:
            check.fail("window", f"must be [low, high], got {window!r}")
        elif not all(is_number(bound) for bound in window):
            check.fail("window", f"bounds must be numbers, got {list(window)!r}")
        elif not all(0.0 <= bound <= 1.0 for bound in window):
            check.fail("window", f"{list(window)!r} is outside [0, 1] (predictions are accuracies)")
        elif not window[0] < window[1]:
            check.fail("window", f"{list(window)!r} is empty: low must be below high")
        else:
            object.__setattr__(self, "window", (float(window[0]), float(window[1])))
        check.integer("warmup_steps", minimum=0)
        check.number("explore_rate", lo=0.0, hi=1.0)
        check.integer("max_scan", minimum=1, optional=True)
        check.integer("seed")
        check.choice("mode", MODES)
        check.number("guard_threshold", lo=0.0, hi=1.0)
        check.integer("guard_steps", minimum=0)
        check.done()

    def resolved(self, train_batch_size: int) -> FilterConfig:
        """This config with ``max_scan=None`` replaced by its default for a batch of ``train_batch_size``."""
        if self.max_scan is not None:
            return self
        return dataclasses.replace(self, max_scan=DEFAULT_SCAN_FACTOR * train_batch_size)

    def to_dict(self) -> dict[str, Any]:
        """Every field by name, as JSON holds it (what a checkpoint saves and a resume compares)."""
        values = {name: getattr(self, name) for name in field_names(type(self))}
        values["selector"] = _plain_config(self.selector)
        return {name: list(v) if isinstance(v, tuple) else v for name, v in values.items()}

    @property
    def needs_estimator(self) -> bool:
        """Whether the named selector reads the estimator's predictions (depo, hybrid)."""
        from recipe.depo.selectors import get_selector_class

        return get_selector_class(self.selector.name).needs_estimator

    @property
    def low(self) -> float:
        return self.window[0]

    @property
    def high(self) -> float:
        return self.window[1]

    @property
    def centre(self) -> float:
        return 0.5 * (self.low + self.high)


def _plain_config(config: Any) -> Any:
    """A (nested) config dataclass as plain JSON values, without hydra's ``_target_``."""
    if dataclasses.is_dataclass(config):
        return {name: _plain_config(getattr(config, name)) for name in field_names(type(config))}
    return list(config) if isinstance(config, tuple) else config


@dataclass(frozen=True)
class Candidate:
    key: str
    # The estimator's predicted accuracy; None when the selector reads no estimator (the filter
    # then records the selector's own score in its place).
    prediction: float | None
    # The caller's object for this prompt (the dataset row); the filter only passes it along, so
    # the carry-over queue holds the rows themselves.
    payload: Any = field(default=None, compare=False, repr=False)
    # The prompt's identity across draws and epochs (``key`` is one draw's uid), which the
    # history selectors remember outcomes by; None: ``key``.
    prompt_id: str | None = None

    @property
    def pid(self) -> str:
        return self.key if self.prompt_id is None else self.prompt_id


@dataclass(frozen=True)
class Admitted:
    key: str
    prediction: float
    reason: str
    payload: Any = field(default=None, compare=False, repr=False)
    prompt_id: str | None = None

    @property
    def pid(self) -> str:
        return self.key if self.prompt_id is None else self.prompt_id


@dataclass
class Selection:
    kept: list[Admitted]
    # Keys dropped for good in this call (never rolled out).
    rejected: list[str]
    # Fresh candidates scored in this call (carried prompts are not re-counted).
    scanned: list[Candidate] = field(default_factory=list)
    scan_cap_hit: bool = False
    carried_in: int = 0
    # Scanned candidates the selector itself accepted (before exploration, fill and warm-up): for
    # the history selectors their recorded "prediction" is a score, not a mean@k to test against
    # the window, so survival is counted from the decisions.
    accepted: int = 0

    def count(self, reason: str) -> int:
        return sum(1 for a in self.kept if a.reason == reason)

    @property
    def keys(self) -> list[str]:
        return [a.key for a in self.kept]


def scan_stats(predictions: Sequence[float], low: float, high: float) -> dict[str, float]:
    """Mean and spread of the predictions over every scanned prompt, and the share inside the
    window [low, high]: what the estimator says about the data, not only about what it kept.
    NaN for all three when nothing was scanned."""
    values = np.asarray(list(predictions), dtype=np.float64)
    if values.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "in_window": float("nan")}
    in_window = (values >= low) & (values <= high)
    return {"mean": float(values.mean()), "std": float(values.std()), "in_window": float(in_window.mean())}


class DifficultyFilter:
    def __init__(self, config: FilterConfig) -> None:
        if config.max_scan is None:
            raise ValueError("FilterConfig.max_scan must be a number: use config.resolved(train_batch_size)")
        self.config = config
        self.carry: list[Admitted] = []
        self.counters = {name: 0 for name in _COUNTERS}
        self._rng = np.random.default_rng(config.seed)
        # Its own RNG (seeded from the same seed), so the exploration draws are those of a
        # run with the depo selector, whatever the selector draws.
        self.selector = build_selector(config.selector, window=config.window, seed=config.seed)

    def in_window(self, prediction: float) -> bool:
        return self.config.low <= prediction <= self.config.high

    def warming_up(self, step: int) -> bool:
        # verl counts steps from 1: warmup_steps=100 leaves steps 1..100 unfiltered.
        return step <= self.config.warmup_steps

    def _decide(self, keep: bool, free: str | None) -> str | None:
        """Why a candidate is rolled out (None: rejected); ``free`` is WARMUP or GUARD when every
        prompt is rolled out this step."""
        if free:
            return free
        if keep:
            return WINDOW
        if self.config.explore_rate > 0.0 and self._rng.random() < self.config.explore_rate:
            return EXPLORE
        return None

    def decide_candidates(self, items: Sequence[Candidate | Admitted]) -> tuple[np.ndarray, np.ndarray]:
        """The selector's (keep, score) per item, in order; the estimator's predictions go with
        them when the selector reads them. (Shadow mode asks this of verl's own batch.)"""
        predictions = None
        if self.selector.needs_estimator:
            predictions = [item.prediction for item in items]
            for item, value in zip(items, predictions):
                if not isinstance(value, (int, float, np.floating)) or not math.isfinite(value):
                    raise ValueError(f"prediction for {item.key!r} is not a finite number: {value!r}")
        decisions = self.selector.decide([item.pid for item in items], predictions)
        return decisions.keep, decisions.score

    def learn(self, prompt_ids: Sequence[str], mean_k: Sequence[float], n: int) -> dict[str, float]:
        """The selector learns from one step's outcomes (mean@k of n rollouts per prompt)."""
        return self.selector.update(list(prompt_ids), mean_k, n)

    def select(
        self, needed: int, step: int, draw: Callable[[int], Sequence[Candidate]], guard: bool = False
    ) -> Selection:
        """Pick exactly ``needed`` prompts; ``draw(k)`` must return >= 1 fresh scored candidates
        (it may return more than ``k``: the caller fetches whole dataloader chunks). ``guard``:
        the drift guard is on, so every drawn prompt is rolled out (as during warm-up)."""
        if isinstance(needed, bool) or not isinstance(needed, int) or needed < 0:
            raise ValueError(f"needed must be an int >= 0, got {needed!r}")
        warm = self.warming_up(step)
        free = WARMUP if warm else GUARD if guard else None
        kept: list[Admitted] = []
        rejected: list[str] = []
        new_carry: list[Admitted] = []
        carried_in = 0

        for item in self.carry:
            if len(kept) >= needed:
                new_carry.append(item)
                continue
            if item.reason in (WARMUP, GUARD) and not free:
                # Kept only because the filter was warming up (or guarded) when it was drawn: it must
                # pass the real filter now, or "after warm-up every rolled-out prompt was in the window" breaks.
                keep, score = self.decide_candidates([item])
                reason = self._decide(bool(keep[0]), free)
                if reason is None:
                    rejected.append(item.key)
                    continue
                prediction = item.prediction if self.selector.needs_estimator else float(score[0])
                item = Admitted(item.key, prediction, reason, item.payload, item.prompt_id)
            kept.append(item)
            carried_in += 1

        scanned: list[Candidate] = []
        out_of_window: list[Candidate] = []
        # The selector's score of each out-of-window candidate: the fill ranks by it.
        out_scores: list[float] = []
        cap_hit = False
        accepted = 0
        while len(kept) < needed:
            if len(scanned) >= self.config.max_scan and len(kept) + len(out_of_window) >= needed:
                cap_hit = True
                break
            chunk = list(draw(needed - len(kept)))
            if not chunk:
                raise RuntimeError("draw() returned no candidates: the training dataloader is empty")
            # Decided during the warm-up too (the hybrid learns its prior weight from these
            # predictions), but every prompt is kept then.
            keeps, scores = self.decide_candidates(chunk)
            for cand, keep, score in zip(chunk, keeps, scores):
                if not self.selector.needs_estimator:
                    # No estimator: what is recorded as the prompt's prediction is the selector's score.
                    cand = dataclasses.replace(cand, prediction=float(score))
                scanned.append(cand)
                accepted += int(bool(keep))
                reason = self._decide(bool(keep), free)
                if reason is None:
                    out_of_window.append(cand)
                    out_scores.append(float(score))
                elif len(kept) < needed:
                    kept.append(Admitted(cand.key, float(cand.prediction), reason, cand.payload, cand.prompt_id))
                else:
                    new_carry.append(Admitted(cand.key, float(cand.prediction), reason, cand.payload, cand.prompt_id))

        if cap_hit:
            centre = self.selector.centre
            # Stable sort: ties keep draw order, so the choice is deterministic.
            ranked = sorted(range(len(out_of_window)), key=lambda i: abs(out_scores[i] - centre))
            chosen = set(ranked[: needed - len(kept)])
            for i, cand in enumerate(out_of_window):
                if i in chosen:
                    kept.append(Admitted(cand.key, float(cand.prediction), FILL, cand.payload, cand.prompt_id))
                else:
                    rejected.append(cand.key)
        else:
            rejected.extend(c.key for c in out_of_window)

        self.carry = new_carry
        selection = Selection(
            kept=kept,
            rejected=rejected,
            scanned=scanned,
            scan_cap_hit=cap_hit,
            carried_in=carried_in,
            accepted=accepted,
        )
        c = self.counters
        c["calls"] += 1
        c["scanned"] += len(scanned)
        c["kept"] += len(kept)
        c["rejected"] += len(rejected)
        c["explored"] += selection.count(EXPLORE)
        c["filled"] += selection.count(FILL)
        c["cap_hits"] += int(cap_hit)
        return selection

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "carry": [[a.key, a.prediction, a.reason, a.prompt_id] for a in self.carry],
            "counters": dict(self.counters),
            "rng": self._rng.bit_generator.state,
            "selector": self.selector.state_dict(),
        }

    def load_state_dict(self, state: dict, payloads: Sequence[Any] | None = None) -> None:
        """Restore ``state_dict()``'s state; ``payloads`` (in carry order) go back onto the queue."""
        entries = state["carry"]
        if payloads is not None and len(payloads) != len(entries):
            raise ValueError(f"filter state: {len(payloads)} payloads for {len(entries)} carried prompts")
        carry = []
        for i, entry in enumerate(entries):
            # Checkpoints written before the selectors hold [key, prediction, reason].
            key, prediction, reason, prompt_id = (list(entry) + [None])[:4]
            if reason not in REASONS:
                raise ValueError(f"filter state: unknown admission reason {reason!r}")
            payload = None if payloads is None else payloads[i]
            carry.append(
                Admitted(str(key), float(prediction), reason, payload, None if prompt_id is None else str(prompt_id))
            )
        counters = {name: int(state["counters"].get(name, 0)) for name in _COUNTERS}
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        saved = state.get("selector")
        # A selector of another name (the run changed depo.filter.selector.name, which
        # checkpoint.check_settings reports) or none saved: the run's selector starts fresh.
        selector = build_selector(self.config.selector, window=self.config.window, seed=self.config.seed)
        if saved is not None and saved.get("selector") == selector.name:
            selector.load_state_dict(saved)
        # Assign only after everything parsed: a bad state leaves the filter untouched.
        self.carry, self.counters, self._rng, self.selector = carry, counters, rng, selector
