"""Table 3 over several sets: the pure table by hand-computed values, the offline CLI on evaluate's
outputs with a real (tiny) estimator checkpoint, and every bad input refused before the estimator runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from recipe.depo.router import offline, table3

REPO = Path(__file__).resolve().parents[2]


def test_table3_by_hand():
    sets = {
        # predicted, small acc, large acc (per query, Avg@k fractions)
        "a": ([0.9, 0.6, 0.2, 0.1], [1.0, 0.5, 0.0, 1.0], [1.0, 1.0, 0.5, 0.0]),
        "b": ([0.8, 0.3], [0.25, 0.0], [0.75, 1.0]),
    }
    rows = {r["setting"]: r for r in table3(sets, [0.5, 0.7], names=("1.5B", "7B"))}
    assert list(rows) == ["1.5B alone", "7B alone", "tau=0.5", "tau=0.7"]
    small = rows["1.5B alone"]
    assert small["sets"]["a"] == {"accuracy": 2.5 / 4, "n_small": 4, "n_large": 0}
    assert small["sets"]["b"]["accuracy"] == 0.125 and small["avg"] == (0.625 + 0.125) / 2
    assert small["share_small"] == 1.0 and rows["7B alone"]["share_small"] == 0.0
    assert rows["7B alone"]["avg"] == (2.5 / 4 + 0.875) / 2
    # tau=0.5: a keeps queries 0,1 on small (1 + 0.5), sends 2,3 to large (0.5 + 0): 2/4;
    #          b keeps query 0 (0.25), sends 1 (1.0): 1.25/2
    tau = rows["tau=0.5"]
    assert tau["threshold"] == 0.5
    assert tau["sets"]["a"] == {"accuracy": 0.5, "n_small": 2, "n_large": 2}
    assert tau["sets"]["b"] == {"accuracy": 0.625, "n_small": 1, "n_large": 1}
    assert tau["avg"] == pytest.approx((0.5 + 0.625) / 2)
    assert tau["share_small"] == 3 / 6  # pooled over both sets, not averaged
    # tau=0.7: a keeps query 0 only (1 + 1 + 0.5 + 0) / 4; b keeps query 0 (0.25 + 1.0) / 2
    assert rows["tau=0.7"]["sets"]["a"]["accuracy"] == 2.5 / 4
    assert rows["tau=0.7"]["sets"]["b"]["accuracy"] == 0.625
    assert rows["tau=0.7"]["share_small"] == 2 / 6


@pytest.mark.parametrize(
    "sets, thresholds, message",
    [
        ({"a": ([0.5], [1.0], [1.0])}, [1.5], "threshold must lie in"),
        ({"a": ([0.5, 0.2], [1.0], [1.0])}, [0.5], "a: length mismatch"),
        ({"a": ([], [], [])}, [0.5], "a: no queries"),
        ({"a": ([0.5], ["x"], [1.0])}, [0.5], "a: small_accuracy must be numbers"),
        ({}, [0.5], "no evaluation set"),
    ],
)
def test_table3_bad_input(sets, thresholds, message):
    with pytest.raises(ValueError, match=message):
        table3(sets, thresholds)


# ----------------------------------------------------------------------------- the CLI
@pytest.fixture
def setup(tmp_path):
    """A saved tiny estimator, two eval sets, and evaluate-style outputs for a small and a large model."""
    from data_prep.arithmetic import build_rows
    from data_prep.common import write_parquet_atomic
    from recipe.depo.estimator import EstimatorConfig, OnlineEstimator, build_tiny_encoder
    from recipe.depo.evaluate import load_set

    backbone = build_tiny_encoder(str(tmp_path / "encoder"))
    OnlineEstimator(EstimatorConfig(backbone=backbone, hidden_dims=[16], dropout=0.0)).save(str(tmp_path / "ckpt"))
    data = tmp_path / "eval"
    write_parquet_atomic(build_rows("test", seed=1, count=4), data / "gsm8k.parquet")
    write_parquet_atomic(build_rows("test", seed=2, count=2, start_index=10), data / "amc23.parquet")
    accs = {
        "small": {"gsm8k": [1.0, 0.5, 0.0, 0.25], "amc23": [0.0, 0.5]},
        "large": {"gsm8k": [1.0, 1.0, 0.75, 0.5], "amc23": [0.25, 1.0]},
    }
    for model, per_set in accs.items():
        (tmp_path / model).mkdir()
        for name, values in per_set.items():
            queries = load_set(data / f"{name}.parquet")
            lines = [
                {
                    "index": q.index,
                    "data_source": q.data_source,
                    "prompt_hash": q.prompt_hash,
                    "n": 4,
                    "num_correct": 4 * a,
                    "acc": a,
                    "mean_response_length": 5.0,
                }  # fmt: skip
                for q, a in zip(queries, values)
            ]
            (tmp_path / model / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return tmp_path


def _argv(root, *extra):
    return ["--estimator", str(root / "ckpt"), "--data", str(root / "eval"), "--small-results", str(root / "small"),
            "--large-results", str(root / "large"), *extra]  # fmt: skip


def test_cli_prints_table3_from_evaluate_outputs(setup, capsys):
    assert offline.main(_argv(setup, "--thresholds", "0", "1", "--small-name", "1.5B", "--large-name", "7B")) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0] == "| setting | GSM8K | AMC23 | Avg | share on small |"
    # small alone: GSM8K 1.75/4 = 43.75, AMC23 0.25 -> Avg 34.4; large: 81.25, 62.5 -> 71.9
    assert "| 1.5B alone | 43.8 | 25.0 | 34.4 | 100.0% |" in table
    assert "| 7B alone | 81.2 | 62.5 | 71.9 | 0.0% |" in table
    # tau=0 keeps all 6 queries on the small model; tau=1 sends all to the large one (an untrained
    # estimator predicts about 0.5, never 1)
    assert "| tau=0 | 43.8 (4/0) | 25.0 (2/0) | 34.4 | 100.0% |" in table
    assert "| tau=1 | 81.2 (0/4) | 62.5 (0/2) | 71.9 | 0.0% |" in table

    assert offline.main(_argv(setup, "--json", "--json-output", str(setup / "t3.json"))) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["setting"] for r in rows] == ["small alone", "large alone", "tau=0.75", "tau=0.7", "tau=0.5", "tau=0.3"]
    assert json.loads((setup / "t3.json").read_text()) == rows
    for row in rows[2:]:
        assert sum(c["n_small"] + c["n_large"] for c in row["sets"].values()) == 6


@pytest.fixture
def estimator_never_loads(monkeypatch):
    from recipe.depo.router.core import DifficultyRouter

    def fail(*args, **kwargs):
        raise AssertionError("the estimator was loaded before every input was checked")

    monkeypatch.setattr(DifficultyRouter, "from_checkpoint", classmethod(fail))


def test_threshold_outside_0_1_fails_at_argument_parsing(setup, capsys, estimator_never_loads):
    with pytest.raises(SystemExit) as exit_info:
        offline.main(_argv(setup, "--thresholds", "0.5", "1.5"))
    assert exit_info.value.code == 2
    assert "--thresholds: 1.5 is outside [0, 1]" in capsys.readouterr().err


@pytest.mark.parametrize(
    "case, message",
    [
        ("csv", "small/gsm8k.jsonl line 1 is not JSON"),
        ("csv_file", "small/gsm8k.csv: unsupported format '.csv'"),
        ("string_acc", "large/amc23.jsonl line 2: 'acc' must be a number in [0, 1], got '1.0'"),
        ("acc_above_one", "small/gsm8k.jsonl line 1: 'acc' must be a number in [0, 1], got 4"),
        ("extra_rows", "set gsm8k: "),
        ("missing_rows", "has no result for 1 queries, e.g. index 3"),
        ("missing_set", "--large-results"),
        ("other_prompt", "index 0 was evaluated on a different prompt"),
        ("empty_data_folder", "--data"),
        ("empty_parquet", "no rows"),
        ("single_file_many_sets", "a single results file, but --data has several sets"),
        ("not_an_estimator", "--estimator"),
        ("json_output_is_a_dir", "--json-output"),
        ("json_output_under_a_file", "is not a directory"),
    ],
)
def test_bad_input_names_the_file_before_the_estimator_runs(case, message, setup, capsys, estimator_never_loads):
    argv = _argv(setup)
    small, large = setup / "small" / "gsm8k.jsonl", setup / "large" / "amc23.jsonl"
    if case == "csv":
        pd.read_json(small, lines=True).to_csv(small, index=False)
    elif case == "csv_file":  # a results file given by name, not evaluate's folder
        pd.read_json(small, lines=True).to_csv(small.with_suffix(".csv"), index=False)
        argv[argv.index("--data") + 1] = str(setup / "eval" / "gsm8k.parquet")
        argv[argv.index("--small-results") + 1] = str(small.with_suffix(".csv"))
    elif case == "string_acc":
        lines = large.read_text().splitlines()
        lines[1] = lines[1].replace('"acc": 1.0', '"acc": "1.0"')
        large.write_text("\n".join(lines) + "\n")
    elif case == "acc_above_one":
        small.write_text(small.read_text().replace('"acc": 1.0', '"acc": 4', 1))
    elif case == "extra_rows":
        with open(small, "a") as handle:
            handle.write(json.dumps({"index": 99, "acc": 1.0}) + "\n")
        message = "1 results for queries the set does not have, e.g. index 99"
    elif case == "missing_rows":
        small.write_text("".join(small.read_text().splitlines(keepends=True)[:3]))
    elif case == "missing_set":
        large.unlink()
    elif case == "other_prompt":
        small.write_text(small.read_text().replace('"prompt_hash": "', '"prompt_hash": "0', 1))
    elif case == "empty_data_folder":
        empty = setup / "empty"
        empty.mkdir()
        argv[argv.index("--data") + 1] = str(empty)
    elif case == "empty_parquet":
        pd.read_parquet(setup / "eval" / "amc23.parquet").iloc[:0].to_parquet(setup / "eval" / "amc23.parquet")
    elif case == "single_file_many_sets":
        argv[argv.index("--small-results") + 1] = str(small)
    elif case == "not_an_estimator":
        argv[argv.index("--estimator") + 1] = str(setup / "eval")
    elif case == "json_output_is_a_dir":
        argv += ["--json-output", str(setup / "eval")]
    elif case == "json_output_under_a_file":
        argv += ["--json-output", str(small / "t3.json")]
    assert offline.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err


@pytest.mark.parametrize(
    "damage, message", [("truncated_heads", "heads.pt: not a complete"), ("no_backbone", "no backbone/")]
)
def test_a_damaged_checkpoint_is_one_line_naming_the_file(setup, capsys, damage, message):
    import shutil

    ckpt = setup / "ckpt"
    if damage == "truncated_heads":
        data = (ckpt / "heads.pt").read_bytes()
        (ckpt / "heads.pt").write_bytes(data[:100])
    else:
        shutil.rmtree(ckpt / "backbone")
    assert offline.main(_argv(setup)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith(f"error: {ckpt}") and message in err, err


@pytest.mark.parametrize("flag", [["--thresholds", "1.5"], ["--data"], ["--no-such-flag"]])
def test_a_bad_argument_is_refused_before_torch_or_verl_is_imported(setup, flag):
    """The argument check answers in about a second: verl (torch, tensordict: ~6 s here) is imported
    only once every input has been checked."""
    probe = (
        "import sys\n"
        "from recipe.depo.router.__main__ import main\n"
        "try:\n"
        f"    main({_argv(setup, *flag)!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('heavy:', sorted(m for m in ('torch', 'verl', 'transformers') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env)
    assert "heavy: []" in out.stdout, out.stdout + out.stderr[-2000:]
    assert "error:" in out.stderr


def test_minus_zero_threshold_is_zero(setup, capsys):
    assert offline.main(_argv(setup, "--thresholds", "-0")) == 0
    assert "tau=-0" not in capsys.readouterr().out
