"""The estimator's three loss terms, as pure functions of tensors.

Shapes: every argument is a 1-D tensor of length B (one entry per prompt).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# exp(log-prob) can be exactly 0 or 1 in float32; a BCE target strictly inside (0, 1) keeps the
# distill head's optimum finite.
DISTILL_TARGET_MIN = 1e-4
DISTILL_TARGET_MAX = 1.0 - 1e-4


def score_loss(score_logits: torch.Tensor, mean_k: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits of the score head against the soft label mean@k in [0, 1] (batch mean)."""
    return F.binary_cross_entropy_with_logits(score_logits.float(), mean_k.float().to(score_logits.device))


def distill_target(avg_logprob: torch.Tensor) -> torch.Tensor:
    """The actor's confidence: exp(mean response-token log-prob), clamped into (0, 1)."""
    return torch.exp(avg_logprob.float()).clamp(DISTILL_TARGET_MIN, DISTILL_TARGET_MAX)


def distill_loss(distill_logits: torch.Tensor, avg_logprob: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits of the distill head against exp(avg_logprob) (batch mean)."""
    target = distill_target(avg_logprob.to(distill_logits.device))
    return F.binary_cross_entropy_with_logits(distill_logits.float(), target)


def ranking_pair_mask(mean_k: torch.Tensor, threshold: float) -> torch.Tensor:
    """mask[i, j] is True for the ordered pairs with mean_k[i] > mean_k[j] + threshold."""
    labels = mean_k.float()
    return labels[:, None] > labels[None, :] + threshold


def ranking_loss(score_logits: torch.Tensor, mean_k: torch.Tensor, threshold: float, margin: float) -> torch.Tensor:
    """Mean over the valid ordered pairs (i, j) of relu(margin - (s_i - s_j)); 0 with no pair.

    The empty case returns ``0 * sum(logits)`` rather than a constant so that callers can always
    call ``backward`` and get zero (not missing, not NaN) gradients.
    """
    logits = score_logits.float()
    mask = ranking_pair_mask(mean_k.to(logits.device), threshold)
    num_pairs = mask.sum()
    if int(num_pairs) == 0:
        return logits.sum() * 0.0
    hinge = F.relu(margin - (logits[:, None] - logits[None, :]))
    return (hinge * mask).sum() / num_pairs


def objective(score, distill, ranking, *, w_distill: float, w_ranking: float):
    """The estimator's update objective from its three terms (tensors or floats):
    ``score + w_distill * distill + w_ranking * ranking``.

    ``OnlineEstimator.update`` reports its loss with this and its gradient is tested against it.
    A weight of 0 (or ``distill=None``: no log-probs this step) leaves its term out entirely, so
    a NaN in an unused term cannot leak into the loss (``0 * nan`` is NaN).
    """
    loss = score
    if distill is not None and w_distill != 0:
        loss = loss + w_distill * distill
    if w_ranking != 0:
        loss = loss + w_ranking * ranking
    return loss
