"""The DEPO difficulty estimator: predicts a prompt's mean@k accuracy under the current policy."""

from .config import EstimatorConfig
from .losses import distill_loss, objective, ranking_loss, score_loss
from .model import DifficultyEstimator
from .online import OnlineEstimator, spearman
from .tiny import build_tiny_encoder

__all__ = [
    "EstimatorConfig",
    "DifficultyEstimator",
    "OnlineEstimator",
    "score_loss",
    "distill_loss",
    "ranking_loss",
    "objective",
    "spearman",
    "build_tiny_encoder",
]
