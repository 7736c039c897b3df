"""The generated arithmetic task: schema, determinism, tiers, and answers the reward function accepts."""

import pandas as pd
import pytest

from data_prep import arithmetic
from recipe.depo.reward import compute_score


def test_every_tier_answer_is_scored_correct_and_near_misses_are_not():
    import random

    rng = random.Random(3)
    for tier in range(len(arithmetic.TIERS)):
        for _ in range(30):
            question, value = arithmetic.make_problem(rng, tier)
            assert eval(question) == value  # the text is plain integer arithmetic
            right = compute_score("arithmetic", arithmetic.answer_text(value), str(value))
            wrong = compute_score("arithmetic", arithmetic.answer_text(value + 1), str(value))
            assert right["acc"] and right["score"] > wrong["score"]
            assert not wrong["acc"]


def test_tiers_grow_in_size():
    lengths = [sum(t.digits) * len(t.digits) for t in arithmetic.TIERS]
    assert lengths == sorted(lengths) and arithmetic.TIERS[0].digits == (1, 1)


def test_build_writes_verl_schema_deterministically(tmp_path):
    paths = arithmetic.build(tmp_path / "a", train_size=60, val_size=12, seed=5)
    again = arithmetic.build(tmp_path / "b", train_size=60, val_size=12, seed=5)
    train = pd.read_parquet(paths["train"])
    assert train.equals(pd.read_parquet(again["train"]))
    assert set(train.columns) >= {"data_source", "prompt", "ability", "reward_model", "extra_info"}
    row = train.iloc[7]
    assert row["data_source"] == "arithmetic"
    assert row["prompt"][0]["role"] == "user" and row["extra_info"]["question"] in row["prompt"][0]["content"]
    assert int(row["reward_model"]["ground_truth"]) == eval(row["extra_info"]["question"])
    assert sorted(train["extra_info"].map(lambda e: e["tier"]).unique()) == list(range(len(arithmetic.TIERS)))
    val = pd.read_parquet(paths["val"])
    overlap = set(train["extra_info"].map(lambda e: e["question"])) & set(
        val["extra_info"].map(lambda e: e["question"])
    )
    assert len(overlap) < len(val) // 2  # tiny tiers repeat by chance; the splits are not copies
    assert val["extra_info"].map(lambda e: e["index"]).min() == 60


def test_cli_refuses_to_overwrite(tmp_path, capsys):
    assert arithmetic.main(["--output", str(tmp_path), "--train-size", "6", "--val-size", "6"]) == 0
    assert arithmetic.main(["--output", str(tmp_path), "--train-size", "6", "--val-size", "6"]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err


def test_bad_sizes_and_tiers_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="--train-size"):
        arithmetic.build(tmp_path, 0, 5, 0)
    with pytest.raises(ValueError, match="tier 99"):
        import random

        arithmetic.make_problem(random.Random(0), 99)
