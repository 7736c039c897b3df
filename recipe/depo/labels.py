"""Per-prompt training labels for the estimator, built from a rolled-out batch (pure Python/numpy).

A label is matched to its prompt by ``uid`` (verl's group id), never by position: verl balances
and reorders the batch across data-parallel ranks, and a label built by position would be paired
with the wrong prompt. ``mean_k`` is the mean of the per-response correctness over the prompt's
responses; ``avg_logprob`` the mean over its responses of each response's mean token log-prob.

Also here: what text the estimator reads for a prompt (``prompt_text``) -- the problem itself,
never the chat template around it.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ACC_KEY_CONFIG = "depo.labels.acc_key"
TEXT_SOURCE_CONFIG = "depo.labels.text_source"


class LabelError(RuntimeError):
    """The rolled-out batch cannot give correct labels (names the config key at fault)."""


# ----------------------------------------------------------------------------- prompt text
def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        # Multimodal messages: content is a list of parts; the estimator reads the text parts.
        parts = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type", "text") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return ""


def user_message_text(raw_prompt: Any) -> str:
    """Content of the last user message of a chat-format prompt (verl's ``raw_prompt``)."""
    if isinstance(raw_prompt, str):
        return raw_prompt
    if isinstance(raw_prompt, np.ndarray):
        raw_prompt = raw_prompt.tolist()
    if not isinstance(raw_prompt, (list, tuple)):
        raise LabelError(f"raw_prompt must be a list of chat messages, got {type(raw_prompt).__name__}")
    for message in reversed(raw_prompt):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return _content_text(message.get("content"))
    raise LabelError("raw_prompt has no message with role 'user': the estimator has no problem text to read")


AUTO_QUESTION_KEY = "question"


def prompt_text(raw_prompt: Any, extra_info: Mapping | None, source: str = "auto") -> str:
    """The text the estimator scores. ``source``:

    * ``auto`` (default): ``extra_info.question`` when the row has it (our data_prep builders
      store the bare problem there, without instructions such as DAPO's "Answer: $Answer"
      template, which would otherwise use up the encoder's tokens identically for every
      prompt), else the last user message;
    * ``user``: always the last user message of ``raw_prompt``;
    * ``extra_info.<key>``: always that dataset column (an error when a row lacks it).
    """
    if source == "auto":
        question = extra_info.get(AUTO_QUESTION_KEY) if isinstance(extra_info, Mapping) else None
        text = question if isinstance(question, str) and question.strip() else user_message_text(raw_prompt)
    elif source == "user":
        text = user_message_text(raw_prompt)
    elif source.startswith("extra_info."):
        key = source[len("extra_info.") :]
        if not isinstance(extra_info, Mapping) or not isinstance(extra_info.get(key), str):
            raise LabelError(f"{TEXT_SOURCE_CONFIG}={source!r} but a row's extra_info has no string {key!r}")
        text = extra_info[key]
    else:
        raise LabelError(f"{TEXT_SOURCE_CONFIG} must be 'auto', 'user' or 'extra_info.<key>', got {source!r}")
    if not text.strip():
        raise LabelError(f"empty problem text for the estimator ({TEXT_SOURCE_CONFIG}={source!r})")
    return text


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


def build_labels(
    uids: Sequence[str],
    correct: Iterable[float],
    mean_logprob: Iterable[float],
    order: Sequence[str] | None = None,
) -> PromptLabels:
    """Group per-response values by uid. Output follows ``order`` when given (every uid in it
    must have responses), else first appearance. Responses whose mean log-prob is NaN (no
    response token) do not count towards ``avg_logprob``; a prompt with none gets NaN there."""
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
    keys = list(acc) if order is None else [str(u) for u in order]
    missing = [u for u in keys if u not in acc]
    if missing:
        raise LabelError(f"no rolled-out response for {len(missing)} kept prompt(s), e.g. uid {missing[0]!r}")
    mean_k = np.array([np.mean(acc[u]) for u in keys], dtype=np.float32)
    avg_lp = np.array([np.mean(lps[u]) if u in lps else np.nan for u in keys], dtype=np.float32)
    counts = np.array([len(acc[u]) for u in keys], dtype=np.int64)
    return PromptLabels(uids=keys, mean_k=mean_k, avg_logprob=avg_lp, num_responses=counts)
