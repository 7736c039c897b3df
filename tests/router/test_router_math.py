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
