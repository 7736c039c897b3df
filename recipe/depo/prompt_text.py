"""The text the estimator reads for a prompt, and the instructions wrapped around it (pure Python).

One home for everything that decides it, shared by training (``labels``/``intake``), the router
(which must score a live request on the very text training scored) and the data builders (which
write the instructions and store the bare problem in ``extra_info.question``). ``data_prep``
imports from here, never the other way round.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TEXT_SOURCE_CONFIG = "depo.labels.text_source"
AUTO_QUESTION_KEY = "question"

# One instruction for every boxed-answer set (the five evaluation sets, OR1, NT): the reward
# (recipe.depo.reward, style "boxed") reads the last \boxed{} of the response.
BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

# The template every DAPO-Math-17K prompt is wrapped in (English even for Chinese problems).
DAPO_TEMPLATE_HEAD = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
)
DAPO_TEMPLATE_TAIL = '\n\nRemember to put your answer on its own line after "Answer:".'

# The instructions data_prep puts around the problem in the user message while it stores the bare
# problem in extra_info.question (which is what the estimator trains on).
DATA_PREP_INSTRUCTIONS: tuple[str, ...] = (DAPO_TEMPLATE_HEAD, DAPO_TEMPLATE_TAIL, BOXED_INSTRUCTION)


class LabelError(RuntimeError):
    """The estimator's text or labels cannot be built correctly (names the config key at fault)."""


def content_text(content: Any) -> str:
    """A message's text; multimodal content (a list of parts) gives its text parts, joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type", "text") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return ""


def last_user_message(prompt: Any, skip_empty: bool = False) -> str | None:
    """The text of the last user message (with ``skip_empty``: the last one that has any text), a
    plain string prompt as is, else None. Arrays (a parquet cell read by pandas or verl) count as
    lists."""
    if isinstance(prompt, str):
        return prompt
    if hasattr(prompt, "tolist"):
        prompt = prompt.tolist()
    if not isinstance(prompt, (list, tuple)):
        return None
    for message in reversed(prompt):
        if isinstance(message, Mapping) and message.get("role") == "user":
            text = content_text(message.get("content"))
            if text.strip() or not skip_empty:
                return text
    return None


def user_message_text(raw_prompt: Any) -> str:
    """Content of the last user message of a chat-format prompt (verl's ``raw_prompt``)."""
    text = last_user_message(raw_prompt)
    if text is None:
        raise LabelError(
            f"raw_prompt ({type(raw_prompt).__name__}) has no message with role 'user': the estimator has no "
            "problem text to read"
        )
    return text


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
