"""Zero-advantage groups: detection, the registered ``grpo_depo`` estimator, and the loss mask.

A GRPO group whose responses all got the same reward (all right or all wrong) has zero advantage
everywhere: it costs a rollout and gives no policy gradient. Under a token-mean loss its tokens
still sit in the denominator and dilute the gradient of the groups that do carry signal. DEPO's
pre-rollout filter exists to make such groups rare; this module measures how rare they are and,
optionally, takes their tokens out of the loss.

``grpo_depo`` (registered in verl's own registry, selected with
``algorithm.adv_estimator=grpo_depo``) returns verl's GRPO advantages, computed by verl's own
function, with one deliberate difference: a flagged group's advantages are exactly 0. verl's
GRPO gives (s - mean) / (std + eps) there, which is exactly 0 for 0/1 or +-1 rewards but, for
equal non-representable floats (e.g. eight rewards of 0.1), the float mean differs from s in the
last bit and the result is a spurious ~1e-3 instead of 0.

verl's estimator interface returns only (advantages, returns), so the trainer's advantage hook
(:class:`ZeroAdvantageGroups`) recomputes the flags with ``zero_adv_group_flags`` from the same
rewards; both use this module's single rule. That hook also does the masking: with
``depo.advantage_filter.mask_zero_adv_groups`` it zeroes the flagged rows' ``response_mask`` and
``loss_mask`` in TransferQueue for the actor update and puts the originals back afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import transfer_queue as tq
from tensordict import TensorDict
from transfer_queue import KVBatchMeta
from verl.base_config import BaseConfig
from verl.trainer.ppo import core_algos
from verl.utils import tensordict_utils as tu

from recipe.depo.config_fields import FieldChecks

GRPO_DEPO = "grpo_depo"
# Rewards within this distance count as equal (they come from float32 tensors).
EQUAL_REWARD_ATOL = 1e-6


def zero_adv_group_flags(scores: Sequence[float] | np.ndarray | torch.Tensor, index: Sequence[Any]) -> np.ndarray:
    """Per row: True when the row's group (same ``index``) has >= 2 responses, all with the same
    score. A lone response is never flagged: GRPO gives it its raw score as advantage."""
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().double().numpy()
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or len(scores) != len(index):
        raise ValueError(f"scores must be 1-D and as long as index ({len(index)}), got shape {scores.shape}")
    groups: dict[Any, list[int]] = {}
    for row, key in enumerate(index):
        groups.setdefault(key, []).append(row)
    flags = np.zeros(len(scores), dtype=bool)
    for rows in groups.values():
        if len(rows) >= 2:
            group = scores[rows]
            if float(group.max() - group.min()) <= EQUAL_REWARD_ATOL:
                flags[rows] = True
    return flags


def group_fraction(flags: np.ndarray, index: Sequence[Any]) -> tuple[int, int]:
    """(flagged groups, all groups) from per-row flags; a group's rows share one flag."""
    flagged: dict[Any, bool] = {}
    for key, flag in zip(index, flags):
        flagged[key] = flagged.get(key, False) or bool(flag)
    return sum(flagged.values()), len(flagged)


def grpo_depo_advantage_with_flags(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray,
    epsilon: float = 1e-6,
    norm_adv_by_std_in_grpo: bool = True,
    config: Any = None,
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    advantages, returns = core_algos.compute_grpo_outcome_advantage(
        token_level_rewards=token_level_rewards,
        response_mask=response_mask,
        index=index,
        epsilon=epsilon,
        norm_adv_by_std_in_grpo=norm_adv_by_std_in_grpo,
        config=config,
    )
    flags = zero_adv_group_flags(token_level_rewards.sum(dim=-1), index)
    if flags.any():
        rows = torch.from_numpy(flags).to(advantages.device)
        advantages = advantages.masked_fill(rows.unsqueeze(-1), 0.0)
        returns = returns.masked_fill(rows.unsqueeze(-1), 0.0)
    return advantages, returns, flags


@core_algos.register_adv_est(GRPO_DEPO)
def compute_grpo_depo_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray,
    epsilon: float = 1e-6,
    norm_adv_by_std_in_grpo: bool | None = None,
    config: Any = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    # verl hands registered estimators only `config` (not norm_adv_by_std_in_grpo): read it there.
    if norm_adv_by_std_in_grpo is None:
        norm_adv_by_std_in_grpo = True if config is None else bool(config.get("norm_adv_by_std_in_grpo", True))
    advantages, returns, _ = grpo_depo_advantage_with_flags(
        token_level_rewards, response_mask, index, epsilon, norm_adv_by_std_in_grpo, config
    )
    return advantages, returns


# Estimators whose advantage is a per-group baseline over the same prompt's responses: for these
# a group with identical rewards has (near-)zero advantage, so flagging and masking are meaningful.
GROUP_ESTIMATORS = frozenset({GRPO_DEPO, "grpo", "grpo_vectorized", "rloo", "rloo_vectorized", "grpo_passk", "opo"})


@dataclass
class AdvantageFilterConfig(BaseConfig):
    """``depo.advantage_filter``."""

    config_key: ClassVar[str] = "depo.advantage_filter"

    mask_zero_adv_groups: bool = False

    def __post_init__(self) -> None:
        check = FieldChecks(self)
        check.boolean("mask_zero_adv_groups")
        check.done()


MASK_FIELDS = ("response_mask", "loss_mask")


def _zeros_like(values: torch.Tensor) -> torch.Tensor:
    if values.is_nested:  # keep the jagged layout TransferQueue stores
        return torch.nested.nested_tensor_from_jagged(torch.zeros_like(values.values()), offsets=values.offsets())
    return torch.zeros_like(values)


class ZeroAdvantageGroups:
    """The advantage hook's TransferQueue side, run after verl has written the advantages.

    ``flag`` logs ``depo/zero_adv_group_frac`` for the trained batch and, with ``mask=True``,
    zeroes the flagged rows' masks -- the mechanism verl itself uses for padding rows: the
    engine's token-mean denominator is the global sum of ``loss_mask`` and the policy loss masks
    with ``response_mask``, so those tokens leave numerator and denominator. ``restore`` puts the
    original masks back once the actor update is done.
    """

    def __init__(self, mask: bool, score_field: str = "rm_scores") -> None:
        self.mask = mask
        self.score_field = score_field
        # (keys, partition, original masks) zeroed for this step's actor update only.
        self._masked: list[tuple[list[str], str, TensorDict]] = []

    def flag(self, batch: KVBatchMeta, metrics: dict) -> None:
        keys = [k for k, tag in zip(batch.keys, batch.tags) if not tag.get("is_padding", False)]
        if not keys:
            return
        data = tq.kv_batch_get(keys=keys, partition_id=batch.partition_id, select_fields=["uid", self.score_field])
        scores = data.select(self.score_field).to_padded_tensor()[self.score_field].float().sum(dim=-1)
        uids = [str(u) for u in tu.get(data, "uid")]
        flags = zero_adv_group_flags(scores, uids)
        flagged, groups = group_fraction(flags, uids)
        metrics["depo/zero_adv_group_frac"] = flagged / groups
        if self.mask:
            # With every group flagged there is no gradient either way; masking all tokens would
            # only turn the token-mean into 0/0.
            masked = flagged if 0 < flagged < groups else 0
            if masked:
                self._zero_masks([k for k, f in zip(keys, flags) if f], batch.partition_id)
            metrics["depo/masked_groups"] = masked

    def _zero_masks(self, keys: list[str], partition_id: str) -> None:
        original = tq.kv_batch_get(keys=keys, partition_id=partition_id, select_fields=list(MASK_FIELDS))
        zeros = TensorDict({name: _zeros_like(original[name]) for name in MASK_FIELDS}, batch_size=len(keys))
        tq.kv_batch_put(keys=keys, partition_id=partition_id, fields=zeros)
        self._masked.append((keys, partition_id, original))

    def restore(self) -> None:
        while self._masked:
            keys, partition_id, original = self._masked.pop()
            tq.kv_batch_put(keys=keys, partition_id=partition_id, fields=original)

    @property
    def has_masked(self) -> bool:
        return bool(self._masked)
