"""Per-prompt labels: exact mean@k and mean log-prob, matched by uid on a shuffled batch."""

import random

import numpy as np
import pytest

from recipe.depo.labels import (
    LabelError,
    build_labels,
    canonical_order,
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


def test_a_groups_mean_logprob_does_not_depend_on_the_order_its_responses_arrived_in():
    # summed in arrival order these give 0, 0 or 1/3 (1 is lost against 1e16 unless the two big
    # ones cancel first); summed sorted, always -1e16 + 1 + 1e16 = 0
    import itertools

    values = [1e16, 1.0, -1e16]
    means = {float(build_labels(["u"] * 3, [1, 0, 1], list(p)).avg_logprob[0]) for p in itertools.permutations(values)}
    assert means == {0.0}


def test_canonical_order_sorts_by_text_then_labels():
    labels = build_labels(
        ["u0", "u0", "u1", "u2", "u2", "u3"], [1, 0, 1, 0, 1, 0], [float("nan"), float("nan"), -1.0, -2.0, -2.0, -3.0]
    )
    # mean_k 0.5, 1, 0.5, 0; u0 has no log-prob (NaN sorts after a value at equal text and mean_k)
    texts = ["b", "a", "b", "c"]
    assert canonical_order(texts, labels) == [1, 2, 0, 3]
    # equal text: lower mean@k first; equal text and mean@k (u0 and u2, 0.5): a log-prob before none
    assert canonical_order(["b", "b", "a", "c"], labels) == [2, 0, 1, 3]
    assert canonical_order(["b", "x", "b", "c"], labels) == [2, 0, 3, 1]
    with pytest.raises(ValueError, match="3 texts for 4 labelled prompts"):
        canonical_order(texts[:3], labels)


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


def _rows(responses, log_probs=None):
    """What TransferQueue's kv_batch_get returns for trajectories: (uid, acc, length) per response."""
    import torch
    from verl.utils import tensordict_utils as tu

    fields = {
        "uid": [u for u, _, _ in responses],
        "extra_fields": [{"reward_extra_info": {"acc": a, "score": 2.0 * a - 1}} for _, a, _ in responses],
    }
    if log_probs is not None:
        fields["response_mask"] = torch.nested.as_nested_tensor(
            [torch.ones(n, dtype=torch.int64) for _, _, n in responses], layout=torch.jagged
        )
        fields["rollout_log_probs"] = torch.nested.as_nested_tensor(
            [torch.tensor(lp, dtype=torch.float32) for lp in log_probs], layout=torch.jagged
        )
    return tu.get_tensordict(fields)


def test_labels_of_a_dropped_batch_are_mean_k_by_uid_and_nan_without_logprobs():
    from recipe.depo.labels import concat_labels, labels_of_rows

    # dynamic sampling dropped: "hi" all right, "lo" all wrong (evicted), "mix" 1 of 4 (surplus)
    responses = [("hi", 1, 2), ("lo", 0, 3), ("mix", 0, 1), ("hi", 1, 2), ("mix", 1, 2), ("lo", 0, 1),
                 ("mix", 0, 1), ("hi", 1, 1), ("lo", 0, 2), ("mix", 0, 3), ("hi", 1, 1), ("lo", 0, 1)]  # fmt: skip
    labels = labels_of_rows(_rows(responses), "acc", None, require_logprobs=False)
    assert labels.uids == ["hi", "lo", "mix"]
    assert labels.mean_k.tolist() == [1.0, 0.0, 0.25] and labels.num_responses.tolist() == [4, 4, 4]
    assert np.isnan(labels.avg_logprob).all()  # the actor never computed old_log_probs for them

    # with the rollout's own log-probs (logprob_source=rollout_log_probs): mean over responses of
    # each response's token mean; hi: (-1 + -3)/2 = -2 and -1 -> -1.5; lo: -0.5 and -2.5 -> -1.5
    two = [("hi", 1, 2), ("lo", 0, 1), ("hi", 1, 1), ("lo", 0, 2)]
    lps = [[-1.0, -3.0], [-0.5], [-1.0], [-2.0, -3.0]]
    labels = labels_of_rows(_rows(two, lps), "acc", "rollout_log_probs", require_logprobs=False)
    np.testing.assert_allclose(labels.avg_logprob, [-1.5, -1.5])
    # a rollout that returned no log-probs (all zero): NaN for dropped groups, an error for a trained batch
    zeros = [[0.0, 0.0], [0.0], [0.0], [0.0, 0.0]]
    assert np.isnan(
        labels_of_rows(_rows(two, zeros), "acc", "rollout_log_probs", require_logprobs=False).avg_logprob
    ).all()
    with pytest.raises(LabelError, match="calculate_log_probs"):
        labels_of_rows(_rows(two, zeros), "acc", "rollout_log_probs")
    with pytest.raises(LabelError, match=r"depo\.labels\.acc_key"):
        labels_of_rows(_rows(two), "is_correct", None)

    both = concat_labels(labels, labels_of_rows(_rows(responses[2:3]), "acc", None))
    assert both.uids == ["hi", "lo", "mix"] and np.isnan(both.avg_logprob[2]) and both.mean_k[2] == 0.0
    with pytest.raises(RuntimeError, match="labelled twice"):
        concat_labels(labels, labels)
