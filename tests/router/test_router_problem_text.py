"""The text a routed request is scored on, and the stream usage reader (pure, by hand)."""

from __future__ import annotations

import json

import pytest

from data_prep.common import boxed_prompt, make_row
from data_prep.dapo_math_17k import TEMPLATE_HEAD, TEMPLATE_TAIL
from recipe.depo.prompt_text import prompt_text
from recipe.depo.router.problem_text import (
    BadRequest,
    chat_problem_text,
    completion_problem_texts,
    strip_instructions,
)
from recipe.depo.router.proxy import UsageSniffer


@pytest.mark.parametrize(
    "message",
    [
        boxed_prompt("What is 7 * 8?"),
        f"{TEMPLATE_HEAD}What is 7 * 8?{TEMPLATE_TAIL}",
        "What is 7 * 8?",
    ],
)
def test_a_request_built_like_a_training_prompt_is_scored_on_the_training_text(message):
    """What training's estimator reads for a data_prep row (prompt_text, source auto) is what the
    router scores for a request carrying that row's user message."""
    row = make_row(
        data_source="x", prompt_text=message, question="What is 7 * 8?", ground_truth="56", index=0, split="test"
    )
    trained_on = prompt_text(row["prompt"], row["extra_info"])
    assert chat_problem_text({"messages": row["prompt"]}) == trained_on == "What is 7 * 8?"


def test_last_user_message_with_text_parts():
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "b"}],
        },
    ]
    assert chat_problem_text({"messages": messages}) == "a\nb"


def test_strip_instructions_keeps_a_message_that_is_only_an_instruction():
    assert strip_instructions("  Solve: x  ", ["Solve:"]) == "x"
    assert strip_instructions("Solve:", ["Solve:"]) == "Solve:"
    assert strip_instructions("keep me", []) == "keep me"


def test_completion_prompts():
    assert completion_problem_texts({"prompt": "p"}) == ["p"]
    assert completion_problem_texts({"prompt": ["p", boxed_prompt("q")]}) == ["p", "q"]
    assert completion_problem_texts({"prompt": [1, 2]}) is None
    assert completion_problem_texts({"prompt": [[1, 2], [3]]}) is None


@pytest.mark.parametrize(
    "body, message",
    [
        ([], "JSON object"),
        ({}, "no 'messages'"),
        ({"messages": "hi"}, "non-empty list"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "no message with role 'user'"),
        ({"messages": [{"role": "user", "content": "   "}]}, "no text"),
    ],
)
def test_chat_bad_bodies(body, message):
    with pytest.raises(BadRequest, match=message):
        chat_problem_text(body)


@pytest.mark.parametrize(
    "body, message",
    [
        ({}, "no 'prompt'"),
        ({"prompt": []}, "non-empty"),
        ({"prompt": [1, "a"]}, "token ids"),
        ({"prompt": [""]}, "no text"),
    ],
)
def test_completion_bad_bodies(body, message):
    with pytest.raises(BadRequest, match=message):
        completion_problem_texts(body)


def test_usage_sniffer_reads_the_last_usage_across_chunk_boundaries():
    usage = {"prompt_tokens": 3, "completion_tokens": 5}
    stream = (
        b'data: {"choices": [{"delta": {"content": "hi"}}], "usage": null}\n\n'
        + b"data: "
        + json.dumps({"choices": [], "usage": usage}).encode()
        + b"\n\ndata: [DONE]\n\n"
    )
    for size in (1, 7, len(stream)):
        sniffer = UsageSniffer()
        for start in range(0, len(stream), size):
            sniffer.feed(stream[start : start + size])
        assert sniffer.usage == usage, size


def test_usage_sniffer_skips_a_line_too_long_to_buffer():
    sniffer = UsageSniffer()
    sniffer.feed(b'data: {"usage": {"prompt_tokens": 1}, "pad": "' + b"x" * (2 << 20))
    sniffer.feed(b'"}\n\ndata: {"usage": {"prompt_tokens": 2}}\n\n')
    assert sniffer.usage == {"prompt_tokens": 2}
    assert len(sniffer._partial) == 0
