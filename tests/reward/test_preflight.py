"""DEPO refuses, at start and in one line naming file, row and key, data its reward cannot score."""

import copy
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import recipe.depo
from recipe.depo.preflight import PreflightError, check_training_start

CONFIG_DIR = os.path.join(os.path.dirname(recipe.depo.__file__), "config")
BASE = [
    "actor_rollout_ref.rollout.n=4",
    "data.train_batch_size=8",
    "reward.custom_reward_function.path=pkg://recipe.depo.reward",
]


def _row(i, truth="4", source="math500", **extra):
    return {
        "data_source": source,
        "prompt": [{"role": "user", "content": f"What is {i}?"}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": truth},
        "extra_info": {"index": i, "split": "train", "question": f"What is {i}?", **extra},
    }


def _write(path, rows):
    pd.DataFrame(rows).to_parquet(path)
    return str(path)


@pytest.fixture(scope="module")
def base_config():
    with initialize_config_dir(CONFIG_DIR, version_base=None):
        return compose("depo_trainer", overrides=BASE)


def _config(base, train, val=None, **values):
    cfg = copy.deepcopy(base)
    OmegaConf.update(cfg, "data.train_files", train)
    OmegaConf.update(cfg, "data.val_files", val or train)
    for key, value in values.items():
        OmegaConf.update(cfg, key.replace("__", "."), value, force_add=True)
    return cfg


def test_good_data_passes(tmp_path, base_config):
    rows = [_row(i) for i in range(5)] + [_row(5, "9", source="math_dapo"), _row(6, "12", source="arithmetic")]
    train = _write(tmp_path / "train.parquet", rows)
    check_training_start(_config(base_config, train))


def test_rows_without_ground_truth_are_refused_naming_file_and_row(tmp_path, base_config):
    rows = [_row(i) for i in range(4)]
    frame = pd.DataFrame(rows)
    frame["reward_model"] = [{"style": "rule"}] * 4  # verl's KeyError('ground_truth'), minutes in
    train = tmp_path / "train.parquet"
    frame.to_parquet(train)
    with pytest.raises(PreflightError) as caught:
        check_training_start(_config(base_config, str(train)))
    assert str(caught.value) == (
        f"data.train_files: {train} row 0: reward_model has no 'ground_truth' key (found ['style'])"
    )


@pytest.mark.parametrize(
    "truth,problem",
    # parquet stores a NaN among strings as null: a missing value either way
    [(None, "is missing"), ("", "empty string"), (float("nan"), "is missing"), ("nan", "'nan'")],
)
def test_bad_references_are_refused(tmp_path, base_config, truth, problem):
    rows = [_row(0), _row(1), _row(2, truth), _row(3)]
    frame = pd.DataFrame(rows)
    frame["reward_model"] = [{"style": "rule", "ground_truth": r["reward_model"]["ground_truth"]} for r in rows]
    train = tmp_path / "train.parquet"
    frame.to_parquet(train)
    with pytest.raises(PreflightError, match=rf"{train} row 2 \(data_source 'math500'\): reward_model\.ground_truth"):
        check_training_start(_config(base_config, str(train)))
    with pytest.raises(PreflightError, match=problem):
        check_training_start(_config(base_config, str(train)))


def test_bad_alternative_answers_and_val_files_are_checked(tmp_path, base_config):
    train = _write(tmp_path / "train.parquet", [_row(0, answers=["4", "four"]), _row(1, answers=["4", ""])])
    with pytest.raises(PreflightError, match=r"train\.parquet row 1 .*extra_info\.answers has an item"):
        check_training_start(_config(base_config, train))
    good = _write(tmp_path / "good.parquet", [_row(0)])
    val = _write(tmp_path / "val.parquet", [_row(0), _row(1, truth="  ")])
    with pytest.raises(PreflightError, match=r"^data\.val_files: .*val\.parquet row 1"):
        check_training_start(_config(base_config, good, val))


def test_acc_key_the_reward_does_not_return_is_refused(tmp_path, base_config):
    train = _write(tmp_path / "train.parquet", [_row(0)])
    with pytest.raises(PreflightError) as caught:
        check_training_start(_config(base_config, train, depo__labels__acc_key="correct"))
    message = str(caught.value)
    assert message.startswith("depo.labels.acc_key='correct': the reward function pkg://recipe.depo.reward")
    assert "['acc', 'pred', 'score', 'verdict']" in message and "row 0" in message
    # not needed without the estimator (GRPO + masking only reads rewards)
    check_training_start(_config(base_config, train, depo__labels__acc_key="correct", depo__filter__enable=False))


def test_custom_reward_returning_a_bare_float_is_refused(tmp_path, base_config):
    reward = tmp_path / "my_reward.py"
    reward.write_text("def score(data_source, solution_str, ground_truth, extra_info=None, **kw):\n    return 0.0\n")
    train = _write(tmp_path / "train.parquet", [_row(0)])
    cfg = _config(
        base_config,
        train,
        reward__custom_reward_function__path=str(reward),
        reward__custom_reward_function__name="score",
    )
    with pytest.raises(PreflightError, match=r"returns no such key \(it returned a float, not a dict"):
        check_training_start(cfg)


def test_unknown_data_source_is_refused_at_start(tmp_path, base_config):
    train = _write(tmp_path / "train.parquet", [_row(0), _row(1, source="my_set")])
    expected = r"row 1 \(data_source 'my_set'\): the reward function .* unknown data_source"
    with pytest.raises(PreflightError, match=expected):
        check_training_start(_config(base_config, train))


def test_builtin_scorer_is_refused_for_sources_without_acc(tmp_path, base_config):
    # No custom reward function: verl's built-in scorer runs, which returns `acc` for the
    # math_dapo family only (read from the same pass over the file as the row checks).
    train = _write(tmp_path / "train.parquet", [_row(0, source="openai/gsm8k")])
    with pytest.raises(PreflightError, match=r"^reward\.custom_reward_function\.path:.*openai/gsm8k"):
        check_training_start(_config(base_config, train, reward__custom_reward_function__path=None))
    train = _write(tmp_path / "train.parquet", [_row(0, source="math_dapo")])
    check_training_start(_config(base_config, train, reward__custom_reward_function__path=None))


def test_entry_point_fails_in_one_line_before_ray(tmp_path):
    frame = pd.DataFrame([_row(i) for i in range(3)])
    frame["reward_model"] = [{"style": "rule", "ground_truth": g} for g in ("1", None, "3")]
    train = tmp_path / "train.parquet"
    frame.to_parquet(train)
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "recipe.depo.main_depo", *BASE, f"data.train_files={train}", f"data.val_files={train}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == (
        f"depo: cannot train on this data: data.train_files: {train} row 1 (data_source 'math500'): "
        "reward_model.ground_truth is missing (None)"
    )
    assert "Traceback" not in result.stderr and "ray" not in result.stdout.lower()
    assert time.perf_counter() - start < 120


def test_numpy_answers_round_trip(tmp_path, base_config):
    # extra_info.answers comes back from parquet as numpy arrays; that is fine
    rows = [_row(0, answers=np.array(["4", "4.0"], dtype=object))]
    check_training_start(_config(base_config, _write(tmp_path / "train.parquet", rows)))
