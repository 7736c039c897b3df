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


def test_a_tier_mix_gives_exact_shares_and_one_of_each_by_default(tmp_path):
    from recipe.depo.demo.arithmetic_task import tier_cycle

    assert tier_cycle(None) == [0, 1, 2, 3, 4, 5]
    assert tier_cycle((2, 0, 1, 0, 0, 1)) == [0, 0, 2, 5]
    mixed = arithmetic.build(tmp_path / "m", train_size=24, val_size=12, seed=5, tier_mix=(3, 3, 3, 1, 1, 1))
    tiers = pd.read_parquet(mixed["val"])["extra_info"].map(lambda e: e["tier"]).tolist()
    assert tiers == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 4, 5]
    # the default is the round-robin the demo always had: same rows as an explicit all-ones mix
    plain = arithmetic.build(tmp_path / "p", train_size=24, val_size=12, seed=5)
    ones = arithmetic.build(tmp_path / "o", train_size=24, val_size=12, seed=5, tier_mix=(1,) * 6)
    assert pd.read_parquet(plain["train"]).equals(pd.read_parquet(ones["train"]))


@pytest.mark.parametrize("mix", ["3,3,3", "1,1,1,1,1,x", "0,0,0,0,0,0", "1,1,1,1,1,-1"])
def test_a_bad_tier_mix_is_one_line_and_writes_nothing(tmp_path, capsys, mix):
    out = tmp_path / "out"
    assert arithmetic.main(["--output", str(out), "--train-size", "6", "--val-size", "6", "--tier-mix", mix]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --tier-mix must be 6 comma-separated whole numbers"), err
    assert not out.exists()


def test_build_refuses_a_bad_tier_mix_naming_the_flag(tmp_path):
    with pytest.raises(ValueError, match="--tier-mix must be 6 comma-separated whole numbers.*got '1,1,1'"):
        arithmetic.build(tmp_path / "out", train_size=6, val_size=6, seed=0, tier_mix=(1, 1, 1))
    assert not (tmp_path / "out").exists()
