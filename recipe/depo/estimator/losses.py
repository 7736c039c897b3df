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


def ranking_pair_mask(mean_k: torch.Tensor, threshold: float, groups: torch.Tensor | None = None) -> torch.Tensor:
    """mask[i, j] is True for the ordered pairs with mean_k[i] > mean_k[j] + threshold.

    ``groups``: pairs only within the same group (labels measured under the same policy, e.g.
    one RL step's prompts in a replay of several steps).
    """
    labels = mean_k.float()
    mask = labels[:, None] > labels[None, :] + threshold
    if groups is not None:
        groups = groups.to(mask.device)
        mask = mask & (groups[:, None] == groups[None, :])
    return mask


def ranking_loss(
    score_logits: torch.Tensor,
    mean_k: torch.Tensor,
    threshold: float,
    margin: float,
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over the valid ordered pairs (i, j) of relu(margin - (s_i - s_j)); 0 with no pair.

    The empty case returns ``0 * sum(logits)`` rather than a constant so that callers can always
    call ``backward`` and get zero (not missing, not NaN) gradients.
    """
    logits = score_logits.float()
    mask = ranking_pair_mask(mean_k.to(logits.device), threshold, groups)
    num_pairs = mask.sum()
    if int(num_pairs) == 0:
        return logits.sum() * 0.0
    hinge = F.relu(margin - (logits[:, None] - logits[None, :]))
    return (hinge * mask).sum() / num_pairs


def total_loss(
    score_logits: torch.Tensor,
    distill_logits: torch.Tensor,
    mean_k: torch.Tensor,
    avg_logprob: torch.Tensor,
    *,
    w_distill: float = 0.5,
    w_ranking: float = 3.0,
    threshold: float = 0.05,
    margin: float = 0.5,
) -> dict[str, torch.Tensor]:
    """score + w_distill * distill + w_ranking * ranking; a weight of 0 removes its term entirely.

    Returns a dict with ``loss`` and each term (terms are reported even when their weight is 0).
    """
    s = score_loss(score_logits, mean_k)
    d = distill_loss(distill_logits, avg_logprob)
    r = ranking_loss(score_logits, mean_k, threshold, margin)
    loss = s
    # Adding 0 * term would still propagate a NaN from a disabled term; skip it instead.
    if w_distill != 0:
        loss = loss + w_distill * d
    if w_ranking != 0:
        loss = loss + w_ranking * r
    return {"loss": loss, "score_loss": s, "distill_loss": d, "ranking_loss": r}
