"""DEPO's batch intake: what replaces verl's "next gen batch" when the estimator is on.

:class:`PromptIntake` draws dataloader fetches, has the estimator score each prompt's problem
text, lets the :class:`~recipe.depo.filter.DifficultyFilter` decide, and returns exactly the
requested prompts as one batch. Kept prompts beyond the request stay in the filter's carry-over
queue *with their dataset rows* (the filter carries each candidate's payload), so that queue is
the only record of what is carried over. The intake also writes the admissions log and keeps
the step's intake metrics and the prompts it submitted (for calibration against their labels).

It knows nothing of the trainer: the caller passes the fetch (verl's ``_fetch_one_gen_batch``)
and the scorer (the estimator worker's ``predict``), so tests can drive it with plain functions.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu

from recipe.depo.audit import SelectionAudit
from recipe.depo.filter import (
    EXPLORE,
    REASONS,
    WINDOW,
    Admitted,
    Candidate,
    DifficultyFilter,
    FilterConfig,
    Selection,
    scan_stats,
)
from recipe.depo.prompt_text import prompt_text


@dataclass(frozen=True)
class Submitted:
    """A prompt sent to rollout: what the estimator read, and what it predicted at selection."""

    text: str
    prediction: float
    reason: str
    # The prompt's identity across epochs (``prompt_id``), which history selectors learn by.
    prompt_id: str = ""


def prompt_id(text: str) -> str:
    """A prompt's identity across draws and epochs: a digest of the text the estimator reads
    (verl's ``uid`` is new at every draw). Two rows with the same problem text are one prompt."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class _StepRecord:
    """What the intake did during one training step (over all its calls)."""

    scanned: int = 0
    scanned_in_window: int = 0
    # Predictions of every prompt scanned this step (kept or not).
    scanned_predictions: list[float] = field(default_factory=list)
    kept: list[Admitted] = field(default_factory=list)
    carried_in: int = 0
    cap_hit: bool = False
    predict_time_s: float = 0.0
    # The drift guard rolled out everything this step.
    guard: bool = False
    # Batches asked of the intake this step: 1, plus verl's dynamic-sampling refills.
    calls: int = 0


class PromptIntake:
    def __init__(
        self,
        filter_config: FilterConfig,
        text_source: str,
        rollouts_per_prompt: int,
        admissions_log: str | None = None,
    ) -> None:
        self.filter = DifficultyFilter(filter_config)
        self.text_source = text_source
        self.rollouts_per_prompt = rollouts_per_prompt
        self.admissions_log = admissions_log
        self._step = _StepRecord()
        # uid -> what was submitted to rollout during the current step
        self.submitted: dict[str, Submitted] = {}
        self.shadow_mode = filter_config.mode == "shadow"
        self.audit = SelectionAudit(filter_config.guard_threshold, filter_config.guard_steps)
        # shadow mode: uid -> whether the selector would have rejected it (this step)
        self.would_reject: dict[str, bool] = {}

    def begin_step(self) -> None:
        self._step = _StepRecord()
        self.submitted = {}
        self.would_reject = {}

    # ------------------------------------------------------------------ selection
    def next_batch(
        self,
        needed: int,
        step: int,
        fetch: Callable[[], TensorDict],
        score: Callable[[list[str]], np.ndarray] | None,
    ) -> TensorDict:
        """Exactly ``needed`` prompts as one batch; ``fetch()`` returns one dataloader batch with
        ``uid``s, ``score(texts)`` one predicted accuracy per text (None: the selector reads no
        estimator)."""

        def draw(at_least: int) -> list[Candidate]:
            fetched = [fetch()]
            while sum(len(f) for f in fetched) < at_least:
                fetched.append(fetch())
            return self._candidates(fetched, score)

        if self.shadow_mode:
            raise RuntimeError("depo.filter.mode=shadow: the batch is verl's own; the intake only shadows it")
        self._step.guard = self.audit.guard_active
        selection = self.filter.select(needed, step, draw, guard=self.audit.guard_active)
        if not selection.kept:
            raise ValueError(f"the intake was asked for {needed} prompts; a batch needs at least one")
        for a in selection.kept:
            text = self.text_of(a.payload)
            self.submitted[a.key] = Submitted(text, a.prediction, a.reason, a.prompt_id or prompt_id(text))
        self._record(selection)
        if self.admissions_log:
            self._log_admissions(selection, step)
        return tu.concat_tensordict([admitted.payload for admitted in selection.kept])

    def _candidates(self, fetched: Sequence[TensorDict], score: Callable | None) -> list[Candidate]:
        """One candidate per row of the fetched batches, scored by the estimator when there is one."""
        rows, texts, uids = [], [], []
        for batch in fetched:
            extras = tu.get(batch, "extra_info") or [None] * len(batch)
            uids += [str(u) for u in tu.get(batch, "uid")]
            texts += [prompt_text(p, e, self.text_source) for p, e in zip(tu.get(batch, "raw_prompt"), extras)]
            rows += [tu.index_select_tensor_dict(batch, [i]) for i in range(len(batch))]
        if score is None:
            predictions = [None] * len(texts)
        else:
            predictions = [float(p) for p in self._score(score, texts)]
        return [
            Candidate(u, p, payload=r, prompt_id=prompt_id(t)) for u, p, r, t in zip(uids, predictions, rows, texts)
        ]

    def shadow(self, batch: TensorDict, step: int, score: Callable | None) -> None:
        """Shadow mode: ``batch`` (verl's own, rolled out whole) is decided by the selector as if
        it were filtering now (warm-up aside), and the would-be rejections are kept for
        ``learn`` to score against the outcomes. Nothing of the batch changes."""
        candidates = self._candidates([batch], score)
        keep, scores = self.filter.decide_candidates(candidates)
        record = self._step
        for cand, k, sc in zip(candidates, keep, scores):
            prediction = float(sc) if cand.prediction is None else cand.prediction
            self.submitted[cand.key] = Submitted(self.text_of(cand.payload), prediction, "shadow", cand.pid)
            self.would_reject[cand.key] = not bool(k)
            record.scanned_predictions.append(prediction)
        record.calls += 1
        record.scanned += len(candidates)
        record.scanned_in_window += int(np.sum(keep))
        if self.admissions_log:
            base = {"step": step, "window": [self.filter.config.low, self.filter.config.high]}
            lines = [
                dict(base, selector=self.filter.selector.name, uid=c.key, prompt_id=c.pid, mode="shadow",
                     prediction=self.submitted[c.key].prediction, decision="rejected" if not k else "window")
                for c, k in zip(candidates, keep)
            ]  # fmt: skip
            os.makedirs(os.path.dirname(os.path.abspath(self.admissions_log)), exist_ok=True)
            with open(self.admissions_log, "a") as f:
                f.writelines(json.dumps(line) + "\n" for line in lines)

    def text_of(self, row: TensorDict) -> str:
        extra = tu.get(row, "extra_info")
        return prompt_text(tu.get(row, "raw_prompt")[0], extra[0] if extra else None, self.text_source)

    def _score(self, score: Callable[[list[str]], np.ndarray], texts: list[str]) -> np.ndarray:
        started = time.perf_counter()
        predictions = np.asarray(score(texts), dtype=np.float64)
        self._step.predict_time_s += time.perf_counter() - started
        if predictions.shape != (len(texts),):
            raise RuntimeError(f"estimator returned {predictions.shape} predictions for {len(texts)} prompts")
        return predictions

    def _record(self, selection: Selection) -> None:
        record = self._step
        record.calls += 1
        record.scanned += len(selection.scanned)
        record.scanned_in_window += selection.accepted
        record.scanned_predictions.extend(c.prediction for c in selection.scanned)
        record.kept.extend(selection.kept)
        record.carried_in += selection.carried_in
        record.cap_hit |= selection.scan_cap_hit

    def _log_admissions(self, selection: Selection, step: int) -> None:
        """One JSON line per decided prompt: what was predicted and why it was (not) rolled out."""
        scanned = {c.key: c.prediction for c in selection.scanned}
        pids = {c.key: c.pid for c in selection.scanned}
        base = {
            "step": step,
            "window": [self.filter.config.low, self.filter.config.high],
            "selector": self.filter.selector.name,
        }
        lines = [
            dict(base, uid=a.key, prompt_id=a.pid, prediction=a.prediction, decision=a.reason) for a in selection.kept
        ]
        lines += [
            dict(base, uid=a.key, prompt_id=a.pid, prediction=a.prediction, decision="carried")
            for a in self.filter.carry
            if a.key in scanned
        ]
        lines += [
            dict(base, uid=k, prompt_id=pids.get(k), prediction=scanned.get(k), decision="rejected")
            for k in selection.rejected
        ]
        os.makedirs(os.path.dirname(os.path.abspath(self.admissions_log)), exist_ok=True)
        with open(self.admissions_log, "a") as f:
            f.writelines(json.dumps(line) + "\n" for line in lines)

    def learn(
        self, uids: Sequence[str], mean_k: Sequence[float], records: Mapping[str, Any] | None = None
    ) -> dict[str, float]:
        """The selector learns from this step's labelled groups (uids of submitted prompts, their
        mean@k); returns its ``depo/selector/*`` metrics. ``records`` maps each uid to what the
        intake recorded when it submitted the prompt (``prompt_id``, ``prediction``, ``reason``);
        default this step's submissions (the async trainers train prompts submitted steps before)."""
        submitted = self.submitted if records is None else records
        unknown = [uid for uid in uids if uid not in submitted]
        if unknown:
            raise RuntimeError(f"{len(unknown)} trained prompt(s) were not submitted by this step's intake")
        ids = [submitted[uid].prompt_id for uid in uids]
        mean_k = np.asarray(mean_k, dtype=np.float64)
        n = self.rollouts_per_prompt
        out = {f"depo/selector/{k}": float(v) for k, v in self.filter.learn(ids, mean_k, n).items()}
        # How the decisions matched the outcomes (recipe/depo/audit.py), and the guard for next step.
        out.update(self.audit.calibration([submitted[uid].prediction for uid in uids], mean_k))
        if self.shadow_mode:
            out.update(self.audit.shadow([self.would_reject[uid] for uid in uids], mean_k, n))
        else:
            reasons = [submitted[uid].reason for uid in uids]
            out.update(
                self.audit.rejections([r == EXPLORE for r in reasons], [r == WINDOW for r in reasons], mean_k, n)
            )
            self.audit.count_guard_step(self._step.guard)
            out["depo/guard_active"] = float(self._step.guard)
            out["depo/guard_steps_total"] = float(self.audit.counts["guard_steps_active"])
        return out

    # ------------------------------------------------------------------ metrics
    def step_metrics(self, step: int, dataset_size: int | None = None) -> dict[str, float]:
        """This step's ``depo/*`` intake metrics; ``dataset_size`` (the training set's length) adds
        ``depo/dataset_passes``."""
        record = self._step
        # Shadow mode filters nothing: every submitted prompt was rolled out, none warmed up.
        warm = self.filter.warming_up(step) and not self.shadow_mode
        if self.shadow_mode:
            kept_preds = np.array([s.prediction for s in self.submitted.values()])
        else:
            kept_preds = np.array([a.prediction for a in record.kept])
        if warm:
            survival = 1.0
        else:  # NaN when the batch came entirely from carry-over: nothing was scored this step
            survival = record.scanned_in_window / record.scanned if record.scanned else float("nan")
        out = {
            "depo/prompts_scanned": record.scanned,
            "depo/survival_rate": survival,
            "depo/rollouts_saved": self.rollouts_per_prompt * self.filter.counters["rejected"],
            "depo/pred_mean": float(kept_preds.mean()) if kept_preds.size else float("nan"),
            "depo/pred_std": float(kept_preds.std()) if kept_preds.size else float("nan"),
            "depo/warmup_active": float(warm),
            "depo/scan_cap_hit": float(record.cap_hit),
            "depo/prompts_kept": len(self.submitted) if self.shadow_mode else len(record.kept),
            "depo/prompts_carried_in": record.carried_in,
            "depo/generation_rounds": record.calls,
            "depo/carry_over": len(self.filter.carry),
            "depo/estimator/predict_time_s": record.predict_time_s,
        }
        for reason in REASONS:
            out[f"depo/kept_{reason}"] = sum(1 for a in record.kept if a.reason == reason)
        # Over every scanned prompt, warm-up included: the kept ones alone hide what is rejected.
        scan = scan_stats(record.scanned_predictions, self.filter.config.low, self.filter.config.high)
        out["depo/scanned_pred_mean"] = scan["mean"]
        out["depo/scanned_pred_std"] = scan["std"]
        out["depo/scanned_in_window"] = scan["in_window"]
        # Cumulative over the run (the counters are checkpointed). Every drawn prompt is scanned,
        # so this counts real passes over the data; verl's training/epoch counts steps instead.
        scanned_total = self.filter.counters["scanned"]
        out["depo/prompts_scanned_total"] = scanned_total
        if dataset_size:
            out["depo/dataset_passes"] = scanned_total / dataset_size
        return out

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        """JSON state; the carried rows themselves are ``carried_rows()`` (same order)."""
        return {"filter": self.filter.state_dict(), "audit": self.audit.state_dict()}

    def carried_rows(self) -> list[TensorDict]:
        return [admitted.payload for admitted in self.filter.carry]

    def load_state_dict(self, state: dict[str, Any], carried_rows: Sequence[TensorDict]) -> None:
        if "audit" in state:  # checkpoints written before the audit have none: it starts fresh
            self.audit.load_state_dict(state["audit"])
        self.filter.load_state_dict(state["filter"], payloads=list(carried_rows))
