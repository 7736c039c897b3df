"""Configuration of the DEPO difficulty estimator (``depo.estimator`` in depo_trainer.yaml)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from verl.base_config import BaseConfig

from ..config_fields import DEPOConfigError, FieldChecks, build, field_names

POOLINGS = ("cls", "mean")
DTYPES = ("float32", "bfloat16")
DEVICES = ("auto", "cpu", "cuda")
# Where the trainer starts the estimator's worker (recipe.depo.workers.estimator_client).
PLACEMENTS = ("colocated", "separate", "cpu")


@dataclass
class EstimatorConfig(BaseConfig):
    """Settings of the estimator; defaults are the authors' launcher values (paper.md)."""

    config_key: ClassVar[str] = "depo.estimator"

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
    placement: str = "colocated"

    def __post_init__(self) -> None:
        check = FieldChecks(self)
        check.text("backbone", what="a non-empty string (local dir or hub id)")
        check.choice("pooling", POOLINGS)
        check.choice("dtype", DTYPES)
        check.choice("device", DEVICES)
        check.choice("placement", PLACEMENTS)
        # OmegaConf hands lists (ListConfig); a tuple keeps the config hashable and JSON-stable.
        dims = self.hidden_dims
        if isinstance(dims, (str, bytes)) or not hasattr(dims, "__iter__") or not all(_positive_int(d) for d in dims):
            check.fail("hidden_dims", f"must be a sequence of positive ints, got {dims!r}")
        else:
            object.__setattr__(self, "hidden_dims", tuple(int(d) for d in dims))
        for name in ("max_length", "micro_batch_size", "predict_batch_size"):
            check.integer(name, minimum=1)
        check.integer("seed")
        check.number("dropout", lo=0.0, hi=1.0, hi_open=True)
        check.number("lr", lo=0.0, lo_open=True)
        for name in ("backbone_lr_scale", "w_distill", "w_ranking", "ranking_threshold", "ranking_margin"):
            check.number(name, lo=0.0)
        check.number("grad_clip", lo=0.0, lo_open=True)
        check.number("weight_decay", lo=0.0)
        check.done()

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


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
