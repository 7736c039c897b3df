import numpy as np
import pytest

from recipe.depo.router import route, routed_accuracy, sweep


def test_route_keeps_queries_at_or_above_threshold_on_small():
    mask = route([0.9, 0.5, 0.49, 0.0, 1.0], 0.5)
    assert mask.tolist() == [True, True, False, False, True]


def test_routed_accuracy_by_hand():
    predicted = [0.9, 0.6, 0.2, 0.1]
    small = [1.0, 0.0, 0.0, 1.0]
    large = [1.0, 1.0, 1.0, 0.0]
    row = routed_accuracy(predicted, small, large, threshold=0.5)
    # queries 0,1 stay small (1 + 0), queries 2,3 go large (1 + 0): 2 of 4
    assert row == {"threshold": 0.5, "accuracy": 0.5, "n_small": 2, "n_large": 2, "share_small": 0.5}


def test_sweep_has_baselines_and_extremes_match_them():
    rng = np.random.default_rng(0)
    predicted = rng.uniform(size=50)
    small = rng.uniform(size=50)
    large = rng.uniform(size=50)
    rows = sweep(predicted, small, large, [0.0, 1.0 + 0.0])
    by_setting = {row["setting"]: row for row in rows}
    assert by_setting["small alone"]["accuracy"] == pytest.approx(small.mean())
    assert by_setting["large alone"]["accuracy"] == pytest.approx(large.mean())
    # tau = 0 keeps everything on the small model
    assert by_setting["tau=0"]["accuracy"] == pytest.approx(small.mean())
    assert by_setting["tau=0"]["share_small"] == 1.0


@pytest.mark.parametrize(
    "args, message",
    [
        (([0.5], [1.0], [1.0], 1.5), "threshold"),
        (([0.5, 0.2], [1.0], [1.0], 0.5), "length mismatch"),
        (([np.nan], [1.0], [1.0], 0.5), "predicted_accuracy"),
        (([0.5], [2.0], [1.0], 0.5), "small_accuracy"),
        (([], [], [], 0.5), "empty"),
    ],
)
def test_bad_input_names_the_argument(args, message):
    with pytest.raises(ValueError, match=message):
        routed_accuracy(*args)


def test_cli_sweeps_thresholds_from_a_real_estimator_checkpoint(tmp_path, capsys):
    """The CLI end to end: a saved tiny estimator, an eval parquet, two per-query result files."""
    import json

    import pandas as pd

    from data_prep.common import make_row, write_parquet_atomic
    from recipe.depo.estimator import EstimatorConfig, OnlineEstimator, build_tiny_encoder
    from recipe.depo.router.offline import main

    backbone = build_tiny_encoder(str(tmp_path / "encoder"))
    estimator = OnlineEstimator(EstimatorConfig(backbone=backbone, hidden_dims=[16], dropout=0.0))
    estimator.save(str(tmp_path / "ckpt"))
    questions = [f"What is {i} + {i}?" for i in range(6)]
    rows = [
        make_row(data_source="arithmetic", prompt_text=q, question=q, ground_truth=str(2 * i), index=i, split="test")
        for i, q in enumerate(questions)
    ]
    write_parquet_atomic(rows, tmp_path / "eval.parquet")
    pd.DataFrame({"index": range(6), "acc": [1, 1, 0, 0, 1, 0]}).to_json(
        tmp_path / "small.jsonl", orient="records", lines=True
    )
    pd.DataFrame({"index": range(6), "acc": [1, 1, 1, 1, 1, 0]}).to_json(
        tmp_path / "large.jsonl", orient="records", lines=True
    )

    args = [
        "--estimator",
        str(tmp_path / "ckpt"),
        "--data",
        str(tmp_path / "eval.parquet"),
        "--small-results",
        str(tmp_path / "small.jsonl"),
        "--large-results",
        str(tmp_path / "large.jsonl"),
        "--thresholds",
        "0.0",
        "1.0",
        "--json",
    ]
    assert main(args) == 0
    rows_out = {row["setting"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows_out["small alone"]["accuracy"] == pytest.approx(0.5)
    assert rows_out["large alone"]["accuracy"] == pytest.approx(5 / 6)
    # an untrained estimator predicts ~0.5 (< 1.0), so tau=1 sends everything to the large model
    assert rows_out["tau=0"]["n_small"] == 6 and rows_out["tau=1"]["n_large"] == 6
    assert rows_out["tau=1"]["accuracy"] == pytest.approx(5 / 6)

    pd.DataFrame({"index": range(5), "acc": [1] * 5}).to_json(tmp_path / "short.jsonl", orient="records", lines=True)
    with pytest.raises(ValueError, match="--large-results: no result for 1 queries"):
        main([str(tmp_path / "short.jsonl") if a == str(tmp_path / "large.jsonl") else a for a in args])
