"""DifficultyEstimator: HF encoder backbone + MLP trunk + score and distill heads."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .config import EstimatorConfig


class ResidualBlock(nn.Module):
    """x + W2 · dropout(GELU(W1 · LayerNorm(x))): a pre-norm bottleneck block."""

    def __init__(self, width: int, bottleneck: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.down = nn.Linear(width, bottleneck)
        self.up = nn.Linear(bottleneck, width)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.dropout(self.act(self.down(self.norm(x)))))


def mlp_trunk(width: int, hidden_dims: Sequence[int], dropout: float) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = [nn.Dropout(dropout)]
    for dim in hidden_dims:
        layers += [nn.Linear(width, dim), nn.GELU(), nn.Dropout(dropout)]
        width = dim
    return nn.Sequential(*layers), width


def residual_trunk(width: int, hidden: int, bottleneck: int, blocks: int, dropout: float) -> tuple[nn.Sequential, int]:
    """The authors' head shape: widen to ``hidden``, residual bottleneck blocks, final norm."""
    layers: list[nn.Module] = [nn.Dropout(dropout), nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout)]
    layers += [ResidualBlock(hidden, bottleneck, dropout) for _ in range(blocks)]
    layers.append(nn.LayerNorm(hidden))
    return nn.Sequential(*layers), hidden


class DifficultyEstimator(nn.Module):
    """Maps a tokenised prompt to two logits.

    ``score``: logit of the prompt's mean@k accuracy under the current policy.
    ``distill``: logit of the actor's confidence, exp(mean response-token log-prob); an auxiliary
    target that is dense (every rollout gives one) where mean@k is coarse (multiples of 1/k).
    """

    def __init__(
        self,
        backbone: nn.Module,
        hidden_dims: Sequence[int] = (256,),
        dropout: float = 0.1,
        pooling: str = "cls",
        trunk: tuple[nn.Module, int] | None = None,
    ) -> None:
        """``trunk``: a prebuilt (module, output width) replacing the ``hidden_dims`` MLP."""
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        self.backbone = backbone
        self.pooling = pooling
        if trunk is None:
            trunk = mlp_trunk(int(backbone.config.hidden_size), hidden_dims, dropout)
        self.trunk, width = trunk
        self.score_head = nn.Linear(width, 1)
        self.distill_head = nn.Linear(width, 1)
        # Zero heads make every first prediction exactly sigmoid(0) = 0.5: the estimator starts
        # uninformed instead of with an arbitrary random bias that the window filter would act on.
        for head in (self.score_head, self.distill_head):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    @classmethod
    def from_config(cls, config: EstimatorConfig, backbone_path: str | None = None) -> DifficultyEstimator:
        from transformers import AutoModel

        # Always float32 master weights: bfloat16 is applied with autocast by OnlineEstimator so
        # that AdamW updates at lr * 0.2 are not rounded away.
        backbone = AutoModel.from_pretrained(backbone_path or config.backbone, dtype=torch.float32)
        width = int(backbone.config.hidden_size)
        if config.head == "residual":
            trunk = residual_trunk(
                width, config.residual_width, config.residual_bottleneck, config.residual_blocks, config.dropout
            )
        else:
            trunk = mlp_trunk(width, config.hidden_dims, config.dropout)
        return cls(backbone, dropout=config.dropout, pooling=config.pooling, trunk=trunk)

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything except the backbone (which is saved with save_pretrained)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("backbone.")}

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        features = self.trunk(self.pool(hidden, attention_mask))
        return self.score_head(features).squeeze(-1), self.distill_head(features).squeeze(-1)
