"""What a routed request is scored on: the text training gives the estimator (pure Python).

Training scores a prompt by ``recipe.depo.prompt_text.prompt_text``: the dataset's bare problem
(``extra_info.question``) when the row has one, else the last user message. A live request has no
``extra_info``, so the router reads the last user message (``prompt_text.user_message_text``, the
very function training uses) and removes the answer instructions our data_prep builders wrap the
problem in, so that a request built like a training prompt is scored on exactly the training text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from recipe.depo.prompt_text import DATA_PREP_INSTRUCTIONS, LabelError, user_message_text

DEFAULT_INSTRUCTIONS: tuple[str, ...] = DATA_PREP_INSTRUCTIONS


class BadRequest(ValueError):
    """The request cannot be routed; the message is safe to send back to the client."""


def strip_instructions(text: str, instructions: Sequence[str] = DEFAULT_INSTRUCTIONS) -> str:
    """``text`` without any of ``instructions`` at its start or end (whitespace-insensitive).

    Returns the stripped text unless nothing would be left, then the text unchanged: a message
    that is only an instruction is still something to score.
    """
    stripped = text.strip()
    changed = True
    while changed:
        changed = False
        for instruction in instructions:
            affix = instruction.strip()
            if not affix:
                continue
            if stripped.startswith(affix):
                stripped, changed = stripped[len(affix) :].strip(), True
            if stripped.endswith(affix):
                stripped, changed = stripped[: -len(affix)].strip(), True
    return stripped or text


def _require_object(body: Any) -> Mapping:
    if not isinstance(body, Mapping):
        raise BadRequest(f"request body must be a JSON object, got {type(body).__name__}")
    return body


def chat_problem_text(body: Any, instructions: Sequence[str] = DEFAULT_INSTRUCTIONS) -> str:
    """The problem text of a ``/v1/chat/completions`` body: its last user message."""
    messages = _require_object(body).get("messages")
    if messages is None:
        raise BadRequest("request has no 'messages'")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list of chat messages")
    try:
        text = user_message_text(messages)
    except LabelError:
        raise BadRequest("'messages' has no message with role 'user': there is no problem text to route on") from None
    text = strip_instructions(text, instructions)
    if not text.strip():
        raise BadRequest("the last user message has no text to route on")
    return text


def completion_problem_texts(body: Any, instructions: Sequence[str] = DEFAULT_INSTRUCTIONS) -> list[str] | None:
    """The prompts of a ``/v1/completions`` body, or None when they are token ids (not scorable)."""
    prompt = _require_object(body).get("prompt")
    if prompt is None:
        raise BadRequest("request has no 'prompt'")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts:
        raise BadRequest("'prompt' must be a string or a non-empty list of strings")
    if all(isinstance(p, str) for p in prompts):
        texts = [strip_instructions(p, instructions) for p in prompts]
        if not any(t.strip() for t in texts):
            raise BadRequest("'prompt' has no text to route on")
        return texts
    if all(isinstance(p, int) and not isinstance(p, bool) for p in prompts) or all(
        isinstance(p, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in p) for p in prompts
    ):
        return None
    raise BadRequest("'prompt' must be a string, a list of strings, or token ids")
