"""Per-prompt labels: exact mean@k and mean log-prob, matched by uid on a shuffled batch."""

import random

import numpy as np
import pytest

from recipe.depo.labels import (
    LabelError,
    build_labels,
    correctness,
    response_mean_logprob,
)
from recipe.depo.prompt_text import prompt_text, user_message_text


def test_shuffled_batch_gives_exact_mean_k_and_logprob_per_uid():
    # 3 prompts x 4 responses with known correctness and per-response mean log-probs.
    truth = {"a": [1, 1, 0, 1], "b": [0, 0, 0, 0], "c": [1, 1, 1, 1]}
    lps = {"a": [-0.5, -1.0, -1.5, -1.0], "b": [-2.0, -2.0, -3.0, -1.0], "c": [-0.1, -0.2, -0.3, -0.4]}
    rows = [(u, c, lp) for u in truth for c, lp in zip(truth[u], lps[u])]
    random.Random(0).shuffle(rows)
    labels = build_labels([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    first_seen = list(dict.fromkeys(r[0] for r in rows))
    assert labels.uids == first_seen
    expected = {"a": (0.75, -1.0), "b": (0.0, -2.0), "c": (1.0, -0.25)}
    np.testing.assert_allclose(labels.mean_k, [expected[u][0] for u in first_seen])
    np.testing.assert_allclose(labels.avg_logprob, [expected[u][1] for u in first_seen])
    assert labels.num_responses.tolist() == [4, 4, 4]


def test_response_mean_logprob_uses_only_masked_tokens():
    lp = np.array([[-1.0, -3.0, -100.0], [-2.0, -100.0, -100.0], [0.0, 0.0, 0.0]])
    mask = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0]])
    out = response_mean_logprob(lp, mask)
    np.testing.assert_allclose(out[:2], [-2.0, -2.0])
    assert np.isnan(out[2])
    labels = build_labels(["u", "u", "v"], [1, 0, 1], out)
    assert labels.avg_logprob[0] == pytest.approx(-2.0)  # NaN response ignored
    assert np.isnan(labels.avg_logprob[1])


def test_correctness_reads_reward_extra_info_and_names_the_key_when_missing():
    assert correctness({"reward_extra_info": {"acc": True, "score": -1.0}}, "acc") == 1.0
    assert correctness({"reward_extra_info": {"acc": 0.0}}, "acc") == 0.0
    assert correctness({"reward_extra_info": {}}, "acc", top_level={"acc": 1}) == 1.0
    with pytest.raises(LabelError, match=r"depo\.labels\.acc_key"):
        correctness({"reward_extra_info": {"score": 1.0}}, "acc")
    with pytest.raises(LabelError, match=r"outside \[0, 1\]"):
        correctness({"reward_extra_info": {"acc": -1.0}}, "acc")


def test_length_mismatch_fails():
    with pytest.raises(ValueError, match="length"):
        build_labels(["a", "b"], [1.0], [-1.0, -1.0])


def test_prompt_text_is_the_user_message_not_the_template():
    raw = [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "What is 2+3?"}]
    assert user_message_text(raw) == "What is 2+3?"
    assert prompt_text(raw, {"question": "2+3"}, source="user") == "What is 2+3?"
    # auto: the bare problem when the dataset stores it, else the user message
    assert prompt_text(raw, {"question": "2+3"}) == "2+3"
    assert prompt_text(raw, {"index": 0}) == "What is 2+3?"
    assert prompt_text(raw, None) == "What is 2+3?"
    assert prompt_text(raw, {"question": "2+3"}, source="extra_info.question") == "2+3"
    parts = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Count the dots."}]}]
    assert user_message_text(parts) == "Count the dots."
    with pytest.raises(LabelError, match="no message with role 'user'"):
        user_message_text([{"role": "system", "content": "x"}])
    # the one parser data_prep shares: arrays from parquet count as lists; data_prep skips empty turns
    import numpy as np

    from data_prep.common import user_message

    turns = np.array([{"role": "user", "content": " 1+1 "}, {"role": "user", "content": ""}], dtype=object)
    assert user_message_text(turns) == "" and user_message(turns) == "1+1"  # the estimator then refuses ""
    assert user_message([{"role": "system", "content": "x"}]) is None
    with pytest.raises(LabelError, match=r"depo\.labels\.text_source"):
        prompt_text(raw, {}, source="extra_info.question")
    with pytest.raises(LabelError, match=r"depo\.labels\.text_source"):
        prompt_text(raw, {}, source="chat")
