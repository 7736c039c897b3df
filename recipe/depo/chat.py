"""Reading verl's chat-format prompts (a list of ``{"role", "content"}`` messages). Dependency-free,
so the data builders (``data_prep``) and the estimator's text selection (``labels``) share it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


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
