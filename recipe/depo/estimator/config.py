"""Configuration of the DEPO difficulty estimator."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_POOLINGS = ("cls", "mean")
_HEADS = ("mlp", "residual")
_CALIBRATIONS = ("none", "bias", "affine")
_DTYPES = ("float32", "bfloat16")
_DEVICES = ("auto", "cpu", "cuda")


@dataclass
class EstimatorConfig:
    """Settings of the estimator. ``EstimatorConfig()`` is the paper's estimator (the authors'
    launcher values, notes/paper.md); ``depo_trainer.yaml`` ships the defaults measured by
    ``benchmarks/selection_sim.py`` (docs/estimator.md says which differ and why)."""

    backbone: str = "distilbert-base-uncased"
    pooling: str = "cls"
    max_length: int = 512
    hidden_dims: tuple[int, ...] = (256,)
    dropout: float = 0.1
    lr: float = 2e-4
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
    # Trunk between encoder and heads: "mlp" (``hidden_dims``, GELU, dropout) or "residual" (the
    # authors' head: a ``residual_width`` layer, ``residual_blocks`` pre-norm residual blocks
    # through a ``residual_bottleneck``).
    head: str = "mlp"
    residual_width: int = 1024
    residual_bottleneck: int = 512
    residual_blocks: int = 2
    # Optimizer steps per ``update`` call, each over the labels of the latest ``replay_steps``
    # calls (this one included). Paper: 1 and 1.
    updates_per_step: int = 1
    replay_steps: int = 1
    # The authors' code divides the ranking gradient by the number of micro-batches (an effective
    # weight of w_ranking / ceil(B / micro_batch_size)); False applies w_ranking to the full batch.
    ranking_divide_by_micro_batches: bool = False
    # A map sigmoid(a * logit + b) refitted after every update on the labels of the latest
    # ``calibration_steps`` calls: "none" (paper), "bias" (b only) or "affine" (a and b).
    # ``calibration_prior`` pulls (a, b) towards (1, 0) with the weight of that many labels.
    calibration: str = "none"
    calibration_steps: int = 1
    calibration_prior: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.backbone, str) or not self.backbone:
            raise ValueError(f"backbone must be a non-empty string (local dir or hub id), got {self.backbone!r}")
        if self.pooling not in _POOLINGS:
            raise ValueError(f"pooling must be one of {_POOLINGS}, got {self.pooling!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {self.dtype!r}")
        if self.head not in _HEADS:
            raise ValueError(f"head must be one of {_HEADS}, got {self.head!r}")
        if self.calibration not in _CALIBRATIONS:
            raise ValueError(f"calibration must be one of {_CALIBRATIONS}, got {self.calibration!r}")
        if not isinstance(self.ranking_divide_by_micro_batches, bool):
            raise ValueError(
                f"ranking_divide_by_micro_batches must be true or false, got {self.ranking_divide_by_micro_batches!r}"
            )
        if self.device not in _DEVICES:
            raise ValueError(f"device must be one of {_DEVICES}, got {self.device!r}")
        # OmegaConf hands lists (ListConfig); a tuple keeps the config hashable and JSON-stable.
        try:
            self.hidden_dims = tuple(int(d) for d in self.hidden_dims)
        except TypeError as exc:
            raise ValueError(f"hidden_dims must be a sequence of positive ints, got {self.hidden_dims!r}") from exc
        if any(d <= 0 for d in self.hidden_dims):
            raise ValueError(f"hidden_dims must be positive ints, got {self.hidden_dims!r}")
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
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int, got {self.seed!r}")
        self._check_float("dropout", lo=0.0, hi=1.0, hi_open=True)
        self._check_float("lr", lo=0.0, lo_open=True)
        self._check_float("backbone_lr_scale", lo=0.0)
        self._check_float("w_distill", lo=0.0)
        self._check_float("w_ranking", lo=0.0)
        self._check_float("ranking_threshold", lo=0.0)
        self._check_float("ranking_margin", lo=0.0)
        self._check_float("grad_clip", lo=0.0, lo_open=True)
        self._check_float("weight_decay", lo=0.0)
        self._check_float("calibration_prior", lo=0.0, lo_open=True)

    def _check_float(self, name: str, *, lo: float, hi: float = math.inf, lo_open=False, hi_open=False) -> None:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
        too_low = value <= lo if lo_open else value < lo
        too_high = value >= hi if hi_open else value > hi
        if too_low or too_high:
            lo_b = "(" if lo_open else "["
            hi_b = ")" if hi_open else "]"
            raise ValueError(f"{name} must be in {lo_b}{lo}, {hi}{hi_b}, got {value!r}")
        setattr(self, name, float(value))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> EstimatorConfig:
        """Build from a plain dict or an OmegaConf block; unknown keys are an error."""
        if values is None:
            return cls()
        try:  # OmegaConf is optional here: accept DictConfig without importing it eagerly
            from omegaconf import DictConfig, OmegaConf

            if isinstance(values, DictConfig):
                values = OmegaConf.to_container(values, resolve=True)
        except ImportError:  # pragma: no cover
            pass
        if not isinstance(values, Mapping):
            raise ValueError(f"estimator config must be a mapping, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown estimator config keys {unknown}; valid keys: {sorted(known)}")
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["hidden_dims"] = list(self.hidden_dims)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


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
