"""What the estimator adds to an RL step, estimated before a run starts.

A slow estimator setup (a BERT-sized encoder on CPU, several updates per step, a wide scan, long
prompts) costs every one of a thousand steps; at start-up, ``startup_warning`` turns the run's
config into one warning line when the estimate exceeds 10% of a step, naming what to change.

The estimate counts the encoder's floating-point work per step, as ``OnlineEstimator`` does it:

* ``predict`` on every scanned prompt (``depo.filter.max_scan``, 8 x the batch by default): one
  forward each;
* ``update`` on the step's labelled prompts (the batch, times ``replay_steps``), per optimizer
  step (``updates_per_step``): forward and backward (3 forwards' work), plus the no-grad forward
  of the exact ranking scheme's first pass when the batch spans several micro-batches;
* the calibration refit (``calibration`` not ``none``): one forward over the latest
  ``calibration_steps`` steps' labelled prompts.

A forward costs ``layers x (8 h^2 + 4 h ff + 4 L h)`` per token (the four attention projections,
the feed-forward pair, scores and weighted sum) at ``L`` tokens per prompt, times 2 for multiply
and add counted as two, plus 15% padding (prompts are batched by length). Divided by an effective
throughput: ``CPU_FLOPS`` measured here (``benchmarks/estimator_step_time.py``, all-MiniLM-L6-v2,
one thread, see below), ``GPU_FLOPS`` assumed (not measured in this project: ``benchmarks/gpu_check.py``
measures it on a GPU). "A step" is ``depo.estimator.expected_step_seconds``: by default the
paper's DEPO step, 125.65 s (Table 2: 7B policy, 16 GPUs), because a start-up check cannot know
the policy's rollout time before it has run one; set it to the run's own step time (0 turns the
check off).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

PAPER_STEP_S = 125.65
WARN_SHARE = 0.10
# Effective encoder throughput, floating-point operations per second. CPU: all-MiniLM-L6-v2 on one
# thread of the development machine (AMD EPYC): a predict of 64 realistic-length prompts
# (benchmarks/estimator_step_time.py --models minilm --configs paper --scanned 64 --batch 16) did
# ~0.73 TFLOP by this count in 8.9 s, ~8e10/s; rounded down for the padding and overhead the
# count leaves out. A Ray CPU actor may get more threads. GPU: an assumption (fp32, small batches,
# ~half of an A100's 19.5 TFLOP/s), not a measurement.
CPU_FLOPS = 6.0e10
GPU_FLOPS = 1.0e13
PADDING = 1.15
# Tokens per prompt when the training data cannot be read at start-up: the mean of the assumed
# DAPO-Math-17K problem lengths (benchmarks/prompt_lengths.py).
DEFAULT_PROMPT_TOKENS = 106
CHARS_PER_TOKEN = 4.0
SAMPLE_ROWS = 256

# Shapes of encoders a run names by hub id (no download at start-up): layers, width, feed-forward.
KNOWN_SHAPES: dict[str, tuple[int, int, int]] = {
    "distilbert-base-uncased": (6, 768, 3072),
    "distilbert-base-cased": (6, 768, 3072),
    "bert-base-uncased": (12, 768, 3072),
    "bert-base-cased": (12, 768, 3072),
    "bert-large-uncased": (24, 1024, 4096),
    "roberta-base": (12, 768, 3072),
    "sentence-transformers/all-MiniLM-L6-v2": (6, 384, 1536),
    "all-MiniLM-L6-v2": (6, 384, 1536),
}


@dataclass(frozen=True)
class EncoderShape:
    layers: int
    hidden: int
    intermediate: int

    def forward_flops(self, tokens: float) -> float:
        """Floating-point operations of one forward over a prompt of ``tokens`` tokens."""
        h, ff = self.hidden, self.intermediate
        return 2.0 * self.layers * tokens * (4 * h * h + 2 * h * ff + 2 * tokens * h)

    def describe(self) -> str:
        return f"{self.layers} layers x {self.hidden} wide"


@dataclass(frozen=True)
class StepCost:
    predict_s: float
    update_s: float
    on_gpu: bool

    @property
    def total_s(self) -> float:
        return self.predict_s + self.update_s


def estimate_step_cost(
    shape: EncoderShape,
    *,
    prompt_tokens: float,
    scanned: int,
    labelled: int,
    updates_per_step: int = 1,
    replay_steps: int = 1,
    micro_batch_size: int = 8,
    ranking: bool = True,
    calibration_prompts: int = 0,
    on_gpu: bool,
    flops_per_second: float | None = None,
) -> StepCost:
    """Estimated estimator seconds per RL step (pure: no I/O, no torch)."""
    rate = flops_per_second or (GPU_FLOPS if on_gpu else CPU_FLOPS)
    per_prompt = shape.forward_flops(prompt_tokens) * PADDING
    batch = labelled * replay_steps
    # forward + backward = 3 forwards; the exact ranking scheme adds a no-grad forward first
    per_update = 3 + (1 if ranking and batch > micro_batch_size else 0)
    predict_flops = scanned * per_prompt
    update_flops = (updates_per_step * per_update * batch + calibration_prompts) * per_prompt
    return StepCost(predict_flops / rate, update_flops / rate, on_gpu)


def slow_estimator_message(
    cost: StepCost,
    *,
    step_seconds: float,
    shape: EncoderShape,
    backbone: str,
    placement: str,
    prompt_tokens: float,
    scanned: int,
    labelled: int,
    updates_per_step: int,
    share: float = WARN_SHARE,
) -> str | None:
    """The one warning line when the estimate exceeds ``share`` of a step, else None."""
    if step_seconds <= 0 or cost.total_s <= share * step_seconds:
        return None
    fixes = []
    if not cost.on_gpu:
        fixes.append("run it on a GPU (depo.estimator.placement=colocated or separate, device auto)")
    if shape.layers * shape.hidden > 6 * 384:
        fixes.append("a smaller depo.estimator.backbone (all-MiniLM-L6-v2: ~4x less work than DistilBERT)")
    if updates_per_step > 1:
        fixes.append(f"depo.estimator.updates_per_step=1 (now {updates_per_step})")
    if cost.predict_s > cost.update_s:
        fixes.append(f"a lower depo.filter.max_scan (now {scanned})")
    if prompt_tokens > 128:
        fixes.append(f"a lower depo.estimator.max_length (prompts ~{prompt_tokens:.0f} tokens)")
    fixes.append("or set depo.estimator.expected_step_seconds to this run's step time")
    where = "GPU" if cost.on_gpu else "CPU"
    return (
        f"depo: the difficulty estimator may cost ~{cost.total_s:.1f} s per step ({cost.predict_s:.1f} s predict on "
        f"{scanned} scanned + {cost.update_s:.1f} s update on {labelled} labelled, {backbone} "
        f"({shape.describe()}) on {where}, placement {placement}, ~{prompt_tokens:.0f} tokens per prompt), "
        f"{100 * cost.total_s / step_seconds:.0f}% of an expected {step_seconds:g} s step; to cut it: "
        + "; ".join(fixes)
    )


# ---------------------------------------------------------------- from the run's config


def encoder_shape(backbone: str) -> EncoderShape | None:
    """The encoder's shape from a local directory's config.json or the known hub ids; None when
    neither tells (no download at start-up)."""
    path = os.path.join(backbone, "config.json")
    if os.path.isfile(path):
        try:
            with open(path) as handle:
                cfg = json.load(handle)
            layers = cfg.get("num_hidden_layers", cfg.get("n_layers"))
            hidden = cfg.get("hidden_size", cfg.get("dim"))
            intermediate = cfg.get("intermediate_size", cfg.get("hidden_dim"))
            if all(isinstance(v, int) and v > 0 for v in (layers, hidden, intermediate)):
                return EncoderShape(layers, hidden, intermediate)
        except (OSError, ValueError):
            return None
        return None
    known = KNOWN_SHAPES.get(backbone.rstrip("/"))
    return EncoderShape(*known) if known else None


def prompt_tokens_of(config: Any, max_length: int) -> float:
    """Mean tokens per prompt the estimator reads: from the first rows of the first local train
    file (its own text, ~4 characters per token), else ``DEFAULT_PROMPT_TOKENS``; at most
    ``max_length``."""
    tokens = float(DEFAULT_PROMPT_TOKENS)
    try:
        import pyarrow.parquet as pq

        from recipe.depo.prompt_text import prompt_text

        files = _get(config, "data.train_files")
        files = [files] if isinstance(files, str) else list(files or [])
        local = next((f for f in files if isinstance(f, str) and os.path.isfile(f)), None)
        if local is not None:
            source = _get(config, "depo.labels.text_source") or "auto"
            batch = next(pq.ParquetFile(local).iter_batches(batch_size=SAMPLE_ROWS, columns=["prompt", "extra_info"]))
            rows = batch.to_pylist()
            if rows:
                chars = [len(prompt_text(row["prompt"], row["extra_info"], source)) for row in rows]
                tokens = sum(chars) / len(chars) / CHARS_PER_TOKEN + 2  # [CLS] and [SEP]
    except Exception:  # noqa: BLE001 - an estimate for a warning; the start-up check reports bad data
        pass
    return min(tokens, float(max_length))


def startup_warning(config: Any) -> str | None:
    """The warning line for this run's config (a hydra DictConfig or nested mappings), or None
    when the estimator is off, its shape unknown, or its cost within 10% of a step."""
    from recipe.depo.config import parse

    depo, problems = parse(_get(config, "depo"))
    if problems or not depo.uses_estimator:
        return None
    est = depo.estimator
    shape = encoder_shape(est.backbone)
    batch = _get(config, "data.train_batch_size")
    if shape is None or not isinstance(batch, int) or batch <= 0:
        return None
    scanned = depo.filter.resolved(batch).max_scan
    trainer_device = str(_get(config, "trainer.device") or "cuda")
    on_gpu = est.placement != "cpu" and est.device != "cpu" and trainer_device != "cpu"
    tokens = prompt_tokens_of(config, est.max_length)
    cost = estimate_step_cost(
        shape,
        prompt_tokens=tokens,
        scanned=scanned,
        labelled=batch,
        updates_per_step=est.updates_per_step,
        replay_steps=est.replay_steps,
        micro_batch_size=est.micro_batch_size,
        ranking=est.w_ranking > 0,
        calibration_prompts=0 if est.calibration == "none" else est.calibration_steps * batch,
        on_gpu=on_gpu,
    )
    return slow_estimator_message(
        cost,
        step_seconds=est.expected_step_seconds,
        shape=shape,
        backbone=est.backbone,
        placement=est.placement,
        prompt_tokens=tokens,
        scanned=scanned,
        labelled=batch,
        updates_per_step=est.updates_per_step,
    )


def warn_if_slow(config: Any) -> None:
    """Log ``startup_warning``'s line, if any (called once at start-up, before Ray)."""
    message = startup_warning(config)
    if message:
        logger.warning(message)


def _get(config: Any, path: str) -> Any:
    node = config
    for key in path.split("."):
        if node is None:
            return None
        try:
            node = node.get(key) if isinstance(node, Mapping) or hasattr(node, "get") else None
        except Exception:  # noqa: BLE001 - OmegaConf raises on missing interpolations
            return None
    return node
