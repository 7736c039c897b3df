"""Table 2's trainer mode and DEPO's policy-lag rows (recipe/depo/report), by hand."""

import math

from recipe.depo.report.render import table2
from recipe.depo.report.tables import staleness


def test_staleness_averages_per_step_means_and_keeps_the_largest_max():
    steps = [
        {"depo/staleness/gen_to_train_mean": 0.0, "depo/staleness/gen_to_train_max": 0},
        {"depo/staleness/gen_to_train_mean": 1.0, "depo/staleness/gen_to_train_max": 2},
        {"depo/staleness/gen_to_train_mean": float("nan"), "depo/staleness/gen_to_train_max": float("nan")},
        {"timing_s/step": 1.0},
    ]
    out = staleness(steps)
    assert out == {"gen_to_train": {"mean": 0.5, "max": 2}}
    assert staleness([{"timing_s/step": 1.0}]) == {}


def test_table2_names_each_runs_mode_and_its_lag():
    phases = {"total": 2.0}
    runs = {
        "GRPO": {"seconds_per_step": phases, "steps_averaged": 3, "trainer_mode": "sync", "staleness": {}},
        "DEPO async": {
            "seconds_per_step": phases,
            "steps_averaged": 3,
            "trainer_mode": "colocate_async",
            "staleness": {"outcome_to_gen": {"mean": 2.0, "max": 2}},
        },
        "old run": {"seconds_per_step": phases, "steps_averaged": 3},  # a report.json from before modes
    }
    lines = table2(runs)
    assert "| trainer mode | sync | colocate_async | sync |" in lines
    assert "| policy lag outcome to gen (versions) | – | 2.00 (max 2) | – |" in lines
    assert not any("score to gen" in line for line in lines)
    assert not math.isnan(runs["DEPO async"]["staleness"]["outcome_to_gen"]["mean"])
