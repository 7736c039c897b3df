"""Per-prompt training labels for the estimator, built from a rolled-out batch (pure Python/numpy).

A label is matched to its prompt by ``uid`` (verl's group id), never by position: verl balances
and reorders the batch across data-parallel ranks, and a label built by position would be paired
with the wrong prompt. ``mean_k`` is the mean of the per-response correctness over the prompt's
responses; ``avg_logprob`` the mean over its responses of each response's mean token log-prob.

Also here: ``read_labels``, which reads a trained batch's responses back from verl's
TransferQueue, and ``read_untrained_labels``, the same for the groups verl's dynamic sampling
drops untrained (read before verl clears them; see ``recipe.depo.dynamic_sampling``). What text
the estimator reads for a prompt is ``recipe.depo.prompt_text``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from verl.base_config import BaseConfig

from recipe.depo.config_fields import FieldChecks
from recipe.depo.prompt_text import LabelError

if TYPE_CHECKING:
    from transfer_queue import KVBatchMeta

ACC_KEY_CONFIG = "depo.labels.acc_key"
LOGPROB_SOURCES = ("old_log_probs", "rollout_log_probs")


@dataclass
class LabelsConfig(BaseConfig):
    """``depo.labels``: where correctness, log-probs and the estimator's text come from."""

    config_key: ClassVar[str] = "depo.labels"

    acc_key: str = "acc"
    logprob_source: str = "old_log_probs"
    text_source: str = "auto"

    def __post_init__(self) -> None:
        check = FieldChecks(self)
        check.text("acc_key")
        check.choice("logprob_source", LOGPROB_SOURCES)
        source = self.text_source
        if not isinstance(source, str) or not (
            source in ("auto", "user") or (source.startswith("extra_info.") and len(source) > len("extra_info."))
        ):
            check.fail("text_source", f"must be 'auto', 'user' or 'extra_info.<key>', got {source!r}")
        check.done()


# ----------------------------------------------------------------------------- per response
def correctness(extra_fields: Any, acc_key: str, top_level: Mapping | None = None) -> float:
    """One response's correctness in [0, 1] from its reward extras.

    verl's streaming reward path stores the reward function's extra keys in
    ``extra_fields["reward_extra_info"]``; the colocated reward-model path writes them as
    top-level fields (``top_level``). A missing key is a configuration error, not a zero.
    """
    extra_fields = getattr(extra_fields, "data", extra_fields)
    info = extra_fields.get("reward_extra_info", {}) if isinstance(extra_fields, Mapping) else {}
    if isinstance(info, Mapping) and acc_key in info:
        value = info[acc_key]
    elif top_level is not None and acc_key in top_level:
        value = top_level[acc_key]
    else:
        available = sorted(info) if isinstance(info, Mapping) else []
        raise LabelError(
            f"the reward function returned no {acc_key!r} for a response (reward extras: {available}); "
            f"set {ACC_KEY_CONFIG} to the key that holds per-response correctness, or use a reward "
            f"function that returns it (recipe/depo/reward.py returns 'acc')"
        )
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise LabelError(f"{ACC_KEY_CONFIG}={acc_key!r}: value {value!r} is not a number") from None
    if not (0.0 <= value <= 1.0):
        raise LabelError(
            f"{ACC_KEY_CONFIG}={acc_key!r}: value {value} is outside [0, 1]; it must be correctness "
            f"(1 right, 0 wrong), not a shaped reward"
        )
    return value


def response_mean_logprob(log_probs: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean log-prob over each row's masked tokens; NaN for a row without any token."""
    log_probs = np.asarray(log_probs, dtype=np.float64)
    mask = np.asarray(mask, dtype=np.float64)
    if log_probs.shape != mask.shape or log_probs.ndim != 2:
        raise ValueError(f"log_probs {log_probs.shape} and mask {mask.shape} must be equal 2-D shapes")
    counts = mask.sum(axis=1)
    sums = (log_probs * mask).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1.0), np.nan)


# ----------------------------------------------------------------------------- per prompt
@dataclass
class PromptLabels:
    uids: list[str]
    mean_k: np.ndarray
    avg_logprob: np.ndarray
    num_responses: np.ndarray

    def __len__(self) -> int:
        return len(self.uids)


def build_labels(uids: Sequence[str], correct: Iterable[float], mean_logprob: Iterable[float]) -> PromptLabels:
    """Group per-response values by uid, in order of first appearance. Responses whose mean
    log-prob is NaN (no response token) do not count towards ``avg_logprob``; a prompt with none
    gets NaN there."""
    correct = [float(c) for c in correct]
    mean_logprob = [float(x) for x in mean_logprob]
    if not (len(uids) == len(correct) == len(mean_logprob)):
        raise ValueError(
            f"uids ({len(uids)}), correct ({len(correct)}) and mean_logprob ({len(mean_logprob)}) differ in length"
        )
    acc: OrderedDict[str, list[float]] = OrderedDict()
    lps: dict[str, list[float]] = {}
    for uid, c, lp in zip(uids, correct, mean_logprob):
        uid = str(uid)
        acc.setdefault(uid, []).append(c)
        if not math.isnan(lp):
            lps.setdefault(uid, []).append(lp)
    keys = list(acc)
    mean_k = np.array([np.mean(acc[u]) for u in keys], dtype=np.float32)
    # summed in sorted order: the responses of a group arrive in whatever order they finished, and a
    # float sum's last bits depend on the order
    avg_lp = np.array([np.mean(sorted(lps[u])) if u in lps else np.nan for u in keys], dtype=np.float32)
    counts = np.array([len(acc[u]) for u in keys], dtype=np.int64)
    return PromptLabels(uids=keys, mean_k=mean_k, avg_logprob=avg_lp, num_responses=counts)


# ----------------------------------------------------------------------------- from TransferQueue
def read_labels(batch: KVBatchMeta, config: LabelsConfig) -> PromptLabels:
    """Per-prompt labels of a trained batch, read from TransferQueue by key (padding rows skipped)."""
    keys = [k for k, tag in zip(batch.keys, batch.tags) if not tag.get("is_padding", False)]
    lp_field = config.logprob_source
    fields = ["uid", "extra_fields", "response_mask", lp_field]
    data = _kv_get(keys, batch.partition_id, fields)
    # TransferQueue silently omits fields no row has; name the setting that would provide it.
    missing = [name for name in fields if name not in data.keys()]
    if missing:
        hint = {
            "extra_fields": f"the reward extras holding {config.acc_key!r} ({ACC_KEY_CONFIG})",
            lp_field: f"the log-probs named by depo.labels.logprob_source={lp_field!r}",
        }
        raise LabelError("the trained batch lacks " + ", ".join(hint.get(m, m) for m in missing) + " in TransferQueue")
    return labels_of_rows(data, config.acc_key, lp_field)


def read_untrained_labels(keys: Sequence[str], partition_id: str, config: LabelsConfig) -> PromptLabels:
    """Per-prompt labels of groups verl drops without training them (dynamic sampling's evicted and
    surplus groups), read from TransferQueue by trajectory key before verl clears them.

    ``mean_k`` as for a trained batch. ``avg_logprob`` only when ``depo.labels.logprob_source`` is
    ``rollout_log_probs`` and the rollout wrote them: ``old_log_probs`` is computed by the actor for
    the trained batch alone, so an untrained group has none (NaN: the estimator learns it from mean@k
    alone)."""
    lp_field = "rollout_log_probs" if config.logprob_source == "rollout_log_probs" else None
    fields = ["uid", "extra_fields"] + (["response_mask", lp_field] if lp_field else [])
    data = _kv_get(list(keys), partition_id, fields)
    if "extra_fields" not in data.keys():
        raise LabelError(f"the dropped groups lack the reward extras holding {config.acc_key!r} ({ACC_KEY_CONFIG})")
    if lp_field and not {"response_mask", lp_field} <= set(data.keys()):
        lp_field = None
    return labels_of_rows(data, config.acc_key, lp_field, require_logprobs=False)


def _kv_get(keys: list[str], partition_id: str, fields: list[str]):
    import transfer_queue as tq

    return tq.kv_batch_get(keys=keys, partition_id=partition_id, select_fields=fields)


def labels_of_rows(data: Any, acc_key: str, lp_field: str | None, require_logprobs: bool = True) -> PromptLabels:
    """Per-prompt labels of the rows TransferQueue returned (a TensorDict with ``uid``,
    ``extra_fields`` and, when ``lp_field`` is given, ``response_mask`` and ``lp_field``).

    ``require_logprobs``: all-zero log-probs are a misconfiguration (the rollout returned none) and
    fail naming the setting; else they give NaN ``avg_logprob`` (no log-probs for these groups)."""
    from verl.utils import tensordict_utils as tu

    correct = [correctness(extra, acc_key) for extra in tu.get(data, "extra_fields")]
    uids = [str(u) for u in tu.get(data, "uid")]
    if lp_field is None:
        return build_labels(uids, correct, [math.nan] * len(uids))
    dense = data.select("response_mask", lp_field).to_padded_tensor()
    mask = dense["response_mask"].float().numpy()
    log_probs = dense[lp_field].float().numpy()
    if log_probs.shape != mask.shape:
        raise LabelError(f"{lp_field} {log_probs.shape} and response_mask {mask.shape} do not line up")
    if mask.sum() > 0 and not np.any(log_probs[mask > 0]):
        if not require_logprobs:
            return build_labels(uids, correct, [math.nan] * len(uids))
        raise LabelError(
            f"every response token has {lp_field} == 0: the rollout did not return log-probs; set "
            "depo.labels.logprob_source=old_log_probs or actor_rollout_ref.rollout.calculate_log_probs=true"
        )
    return build_labels(uids, correct, response_mean_logprob(log_probs, mask))


def canonical_order(texts: Sequence[str], labels: PromptLabels) -> list[int]:
    """Positions of ``labels`` (whose prompts read ``texts``) sorted by text, then label values.

    verl hands a trained batch over in the order its groups finished, which varies from run to
    run; the estimator's update depends on its inputs' order (micro-batches, ranking pairs), so
    two runs with the same seed and the same outcomes would train different estimators."""
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts for {len(labels)} labelled prompts")

    def key(i: int) -> tuple:
        lp = float(labels.avg_logprob[i])
        return (texts[i], float(labels.mean_k[i]), math.isnan(lp), 0.0 if math.isnan(lp) else lp)

    return sorted(range(len(texts)), key=key)


def concat_labels(*parts: PromptLabels) -> PromptLabels:
    """One ``PromptLabels`` of several (in order); a uid in two parts is a bookkeeping error."""
    uids = [u for p in parts for u in p.uids]
    if len(set(uids)) != len(uids):
        raise RuntimeError("a prompt's group was labelled twice in one step")
    return PromptLabels(
        uids=uids,
        mean_k=np.concatenate([p.mean_k for p in parts]).astype(np.float32),
        avg_logprob=np.concatenate([p.avg_logprob for p in parts]).astype(np.float32),
        num_responses=np.concatenate([p.num_responses for p in parts]).astype(np.int64),
    )


def empty_labels() -> PromptLabels:
    return PromptLabels([], np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
