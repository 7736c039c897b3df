"""Configuration of the DEPO difficulty estimator (``depo.estimator`` in depo_trainer.yaml)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from verl.base_config import BaseConfig

from ..config_fields import DEPOConfigError, FieldChecks, build, field_names

POOLINGS = ("cls", "mean")
HEADS = ("mlp", "residual")
CALIBRATIONS = ("none", "bias", "affine")
DTYPES = ("float32", "bfloat16")
DEVICES = ("auto", "cpu", "cuda")
# Where the trainer starts the estimator's worker (recipe.depo.workers.estimator_client).
PLACEMENTS = ("colocated", "separate", "cpu")


@dataclass
class EstimatorConfig(BaseConfig):
    """Settings of the estimator. The defaults are the ones ``depo_trainer.yaml`` ships (one source
    of each default): the authors' launcher values (docs/depo.md, "Launchers") except where
    ``benchmarks/selection_sim.py`` measured better ones (``PAPER_ESTIMATOR`` lists the authors'
    values; ``EstimatorConfig.paper()`` builds their estimator; docs/estimator.md has the table)."""

    config_key: ClassVar[str] = "depo.estimator"

    backbone: str = "distilbert-base-uncased"
    pooling: str = "cls"
    max_length: int = 512
    hidden_dims: tuple[int, ...] = (256,)
    dropout: float = 0.1
    lr: float = 1e-3
    backbone_lr_scale: float = 0.2
    micro_batch_size: int = 8
    predict_batch_size: int = 64
    w_distill: float = 0.5
    w_ranking: float = 3.0
    ranking_threshold: float = 0.05
    ranking_margin: float = 0.5
    grad_clip: float = 1.0
    dtype: str = "float32"
    seed: int = 0
    # "auto" = CUDA when torch sees a GPU, else CPU; the Ray worker relies on this.
    device: str = "auto"
    weight_decay: float = 0.01
    placement: str = "colocated"
    # Send the update to the worker as soon as the step's labels are complete (after the actor's
    # log-probs) so it runs while the actor updates; False: after the actor's update, in series.
    # The estimator learns the same labels from the same state either way (the next step's
    # predictions wait for it); only the step's wall-clock differs.
    overlap_update: bool = True
    # Trunk between encoder and heads: "mlp" (``hidden_dims``, GELU, dropout) or "residual" (the
    # authors' head: a ``residual_width`` layer, ``residual_blocks`` pre-norm residual blocks
    # through a ``residual_bottleneck``).
    head: str = "mlp"
    residual_width: int = 1024
    residual_bottleneck: int = 512
    residual_blocks: int = 2
    # Optimizer steps per ``update`` call, each over the labels of the latest ``replay_steps``
    # calls (this one included). Paper: 1 and 1.
    updates_per_step: int = 2
    replay_steps: int = 1
    # The authors' code divides the ranking gradient by the number of micro-batches (an effective
    # weight of w_ranking / ceil(B / micro_batch_size)); False applies w_ranking to the full batch.
    ranking_divide_by_micro_batches: bool = False
    # A map sigmoid(a * logit + b) refitted after every update on the labels of the latest
    # ``calibration_steps`` calls: "none" (paper), "bias" (b only) or "affine" (a and b).
    # ``calibration_prior`` pulls the map towards the identity with the weight of that many labels.
    calibration: str = "affine"
    calibration_steps: int = 4
    calibration_prior: float = 1.0
    # Seconds an RL step is expected to take: the start-up check warns when the estimator's
    # estimated cost per step exceeds 10% of it (recipe/depo/estimator/cost.py). Default: the
    # paper's DEPO step (Table 2); 0 turns the check off.
    expected_step_seconds: float = 125.65

    def __post_init__(self) -> None:
        check = FieldChecks(self)
        check.text("backbone", what="a non-empty string (local dir or hub id)")
        check.choice("pooling", POOLINGS)
        check.choice("dtype", DTYPES)
        check.choice("device", DEVICES)
        check.choice("placement", PLACEMENTS)
        check.choice("head", HEADS)
        check.choice("calibration", CALIBRATIONS)
        check.boolean("ranking_divide_by_micro_batches")
        check.boolean("overlap_update")
        # OmegaConf hands lists (ListConfig); a tuple keeps the config hashable and JSON-stable.
        dims = self.hidden_dims
        if isinstance(dims, (str, bytes)) or not hasattr(dims, "__iter__") or not all(_positive_int(d) for d in dims):
            check.fail("hidden_dims", f"must be a sequence of positive ints, got {dims!r}")
        else:
            object.__setattr__(self, "hidden_dims", tuple(int(d) for d in dims))
        for name in (
            "max_length",
            "micro_batch_size",
            "predict_batch_size",
            "residual_width",
            "residual_bottleneck",
            "residual_blocks",
            "updates_per_step",
            "replay_steps",
            "calibration_steps",
        ):
            check.integer(name, minimum=1)
        check.integer("seed")
        check.number("dropout", lo=0.0, hi=1.0, hi_open=True)
        check.number("lr", lo=0.0, lo_open=True)
        for name in ("backbone_lr_scale", "w_distill", "w_ranking", "ranking_threshold", "ranking_margin"):
            check.number(name, lo=0.0)
        check.number("grad_clip", lo=0.0, lo_open=True)
        check.number("weight_decay", lo=0.0)
        check.number("calibration_prior", lo=0.0, lo_open=True)
        check.number("expected_step_seconds", lo=0.0)
        check.done()

    @classmethod
    def paper(cls, **overrides: Any) -> EstimatorConfig:
        """The authors' estimator (``PAPER_ESTIMATOR``), with ``overrides`` on top."""
        return cls.from_dict({**PAPER_ESTIMATOR, **overrides})

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> EstimatorConfig:
        """Build from a plain dict or an OmegaConf block; unknown keys are an error."""
        problems: list[tuple[str, str]] = []
        config = build(cls, values, problems)
        if problems:
            raise DEPOConfigError(problems)
        return config

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in field_names(type(self))}
        out["hidden_dims"] = list(self.hidden_dims)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# Where the shipped defaults differ from the authors' estimator, the authors' values (their 7B
# launcher, listed in docs/depo.md); every other field's default already is theirs.
PAPER_ESTIMATOR: dict[str, Any] = {"lr": 2e-4, "updates_per_step": 1, "replay_steps": 1, "calibration": "none"}


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


# Settings that shape the trained weights: a resumed estimator cannot take a new value.
STRUCTURAL_KEYS = ("backbone", "pooling", "head")
_MLP_KEYS = ("hidden_dims",)
_RESIDUAL_KEYS = ("residual_width", "residual_bottleneck", "residual_blocks")
# Settings whose state resumes from the checkpoint: a new value is accepted but has no effect.
_RESUMED_STATE = {"seed": "the estimator's RNG stream resumes from the checkpoint"}


def _normalise(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def resume_changes(saved: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Compare a checkpoint's estimator settings with those a run resumes with.

    Returns ``(applied, refused)``: one line per changed key, each starting with the key. A
    refused change cannot apply to trained weights (backbone, pooling, head shape, freezing or
    unfreezing the backbone); everything else takes effect on resume.
    """
    applied: list[str] = []
    refused: list[str] = []
    head = new.get("head", "mlp")
    for key in sorted(set(saved) | set(new)):
        old, cur = _normalise(saved.get(key)), _normalise(new.get(key))
        if old == cur:
            continue
        change = f"{key}: {old!r} in the checkpoint, {cur!r} now"
        shapes_weights = key in STRUCTURAL_KEYS or (
            (key in _MLP_KEYS and head == "mlp") or (key in _RESIDUAL_KEYS and head == "residual")
        )
        if shapes_weights:
            refused.append(
                f"{change}: it shapes the trained weights, so a resume cannot change it; set it back or "
                "start the estimator fresh"
            )
        elif key == "backbone_lr_scale" and (old == 0) != (cur == 0):
            refused.append(
                f"{change}: freezing or unfreezing the backbone changes the optimizer's parameter groups; "
                "set it back or start the estimator fresh"
            )
        elif key in _RESUMED_STATE:
            applied.append(f"{change} (no effect: {_RESUMED_STATE[key]})")
        elif key in _MLP_KEYS or key in _RESIDUAL_KEYS:
            applied.append(f"{change} (unused by the {head} head)")
        else:
            applied.append(f"{change} (applied)")
    return applied, refused
