"""recipe.depo.report over seeds (issue 26 item 3): mean ± standard error per method, computed by hand."""

import json
import math

import pytest
from test_report_tables import _step, _write_run  # the hand-made run directories of the tables test

from recipe.depo.report import cli
from recipe.depo.report.seeds import aggregate_reports, mean_curve, mean_se


def test_mean_se_by_hand():
    # mean 13; sample variance ((-3)^2 + (-1)^2 + 4^2) / 2 = 13; SE = sqrt(13 / 3)
    mean, se = mean_se([10.0, 12.0, 17.0])
    assert mean == 13.0 and se == pytest.approx(math.sqrt(13 / 3))
    assert mean_se([4.0]) == (4.0, None)  # one seed: no error bar
    with pytest.raises(ValueError):
        mean_se([])


def test_mean_curve_keeps_a_point_some_seeds_lack():
    curves = [{1: 0.2, 2: 0.4, 3: 0.6}, {1: 0.4, 3: 0.8}, {1: 0.6, 2: 0.6, 3: 1.0}]
    band = mean_curve(curves)
    assert [(p["x"], p["n"]) for p in band] == [(1, 3), (2, 2), (3, 3)]
    assert band[0]["mean"] == pytest.approx(0.4) and band[0]["se"] == pytest.approx(0.2 / math.sqrt(3))
    assert band[1]["mean"] == pytest.approx(0.5) and band[1]["se"] == pytest.approx(0.1)  # the two that have step 2


def test_a_number_some_seeds_lack_is_unknown_not_the_mean_of_the_others():
    out = aggregate_reports(
        [
            {"run_dir": "a", "useful_groups": 4, "val": {"x": 50.0, "Avg": 50.0}},
            {"run_dir": "b", "useful_groups": None, "val": {"Avg": 70.0}},
        ]
    )
    assert out["useful_groups"] is None and out["val"]["x"] is None
    assert out["val"]["Avg"] == 60.0 and out["se"]["val"]["Avg"] == pytest.approx(10.0)
    assert out["seeds"] == 2 and out["run_dirs"] == ["a", "b"]


def _seed(folder, step_seconds, final_acc, zero_frac):
    """A GRPO seed: 2 steps (batch 2, n 4), a validation after step 2."""
    return _write_run(
        folder,
        [
            (0, {"val-core/gsm8k/acc/mean@4": 0.3}),
            _step(1, step_seconds[0], 1.0, depo__zero_adv_group_frac=zero_frac),
            _step(2, step_seconds[1], 1.0, depo__zero_adv_group_frac=zero_frac),
            (2, {"val-core/gsm8k/acc/mean@4": final_acc}),
        ],
    )


@pytest.fixture
def seeds(tmp_path):
    return [
        _seed(tmp_path / "g0", (8.0, 12.0), 0.40, 0.5),  # 10 s/step; 2 useful of 4 groups
        _seed(tmp_path / "g1", (12.0, 12.0), 0.50, 0.0),  # 12 s/step; 4 useful
        _seed(tmp_path / "g2", (16.0, 18.0), 0.60, 0.5),  # 17 s/step; 2 useful
    ]


def test_seeds_aggregate_by_hand(seeds, tmp_path, capsys):
    single = _seed(tmp_path / "depo", (5.0, 5.0), 0.7, 0.0)
    argv = ["--runs", "GRPO=" + ",".join(map(str, seeds)), f"DEPO={single}", "--output", str(tmp_path / "out")]
    assert cli.main(argv) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())["runs"]
    grpo = report["GRPO"]
    assert grpo["seeds"] == 3 and grpo["run_dirs"] == [str(s) for s in seeds]
    # Table 1: final accuracy 40, 50, 60 -> 50 ± 10/sqrt(3)
    assert grpo["val"]["gsm8k"] == pytest.approx(50.0)
    assert grpo["se"]["val"]["gsm8k"] == pytest.approx(10 / math.sqrt(3))
    # Table 2: 10, 12, 17 s/step -> 13 ± sqrt(13/3)
    assert grpo["seconds_per_step"]["total"] == pytest.approx(13.0)
    assert grpo["se"]["seconds_per_step"]["total"] == pytest.approx(math.sqrt(13 / 3))
    # GPU-hours: 20, 24, 34 s x 16 GPUs / 3600: mean 26 s, sample variance (36 + 4 + 64) / 2 = 52
    assert grpo["gpu_hours"] == pytest.approx(26 * 16 / 3600)
    assert grpo["se"]["gpu_hours"] == pytest.approx(math.sqrt(52 / 3) * 16 / 3600)
    # rollout accounting: 16 rollouts in every seed (SE 0); useful groups 2, 4, 2 -> 8/3 ± sqrt(4/3)/sqrt(3)
    assert (grpo["rollouts"], grpo["se"]["rollouts"]) == (16, 0.0)
    assert grpo["useful_groups"] == pytest.approx(8 / 3)
    assert grpo["se"]["useful_groups"] == pytest.approx(math.sqrt(4 / 3) / math.sqrt(3))
    assert [s["seconds_per_step"]["total"] for s in grpo["per_seed"]] == [10.0, 12.0, 17.0]
    # a method with one directory: exactly as before, no error bars
    assert "se" not in report["DEPO"] and report["DEPO"]["val"]["gsm8k"] == pytest.approx(70.0)

    md = (tmp_path / "out" / "report.md").read_text()
    assert "| GRPO | 50.0 ± 5.8 | 50.0 ± 5.8 | 0.116 ± 0.0185 |" in md
    assert "| DEPO | 70.0 | 70.0 | 0.0444 |" in md
    assert "| total step | 13.00 ± 2.08 | 5.00 |" in md
    assert "| steps averaged | 2 | 2 |" in md
    assert "| GRPO | 4 | 16 | 2.7 ± 0.7 |" in md
    assert f"| GRPO | {seeds[0]}, {seeds[1]}, {seeds[2]} (3 seeds) | 2 |" in md
    assert (tmp_path / "out" / "val_vs_rollouts.png").read_bytes()[:4] == b"\x89PNG"


def test_a_seed_missing_a_step_is_refused_in_one_line(seeds, tmp_path, capsys):
    lines = (seeds[1] / "metrics.jsonl").read_text().splitlines()
    (seeds[1] / "metrics.jsonl").write_text("\n".join(line for line in lines if '"step": 1,' not in line) + "\n")
    argv = ["--runs", "GRPO=" + ",".join(map(str, seeds)), "--output", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: run GRPO: its seeds logged different training steps") and "\n" not in err, err
    assert "differing: [1]" in err
    assert not (tmp_path / "out" / "report.json").exists()


def test_seeds_of_different_lengths_are_refused_in_one_line(seeds, tmp_path, capsys):
    with open(seeds[2] / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps({"step": 3, "data": _step(3, 9.0, 1.0)[1]}) + "\n")
    argv = ["--runs", "GRPO=" + ",".join(map(str, seeds)), "--output", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "its seeds logged different training steps" in err and "2 (1..2)" in err and "3 (1..3)" in err, err
    assert "\n" not in err


@pytest.mark.parametrize(
    "case, message",
    [
        ("same_dir_twice", "are the same run directory"),
        ("empty_part", "expected NAME=DIR or NAME=DIR1,DIR2,..."),
        ("other_n", "its seeds differ in actor_rollout_ref.rollout.n"),
        ("other_method", "its seeds differ in depo.enable"),
        ("other_source", "its seeds take accuracy from different places"),
    ],
)
def test_seeds_that_are_not_one_method_are_refused(case, message, seeds, tmp_path, capsys):
    spec = "GRPO=" + ",".join(map(str, seeds))
    if case == "same_dir_twice":
        spec += f",{seeds[0]}/."
    elif case == "empty_part":
        spec += ","
    elif case == "other_n":
        config = seeds[1] / "config.yaml"
        config.write_text(config.read_text().replace("n: 4", "n: 8"))
    elif case == "other_method":
        config = seeds[2] / "config.yaml"
        config.write_text(config.read_text() + "depo:\n  enable: true\n")
    elif case == "other_source":
        (seeds[1] / "eval").mkdir()
        summary = {"settings": {"n": 4}, "sets": {"gsm8k": {"acc": 1}}}
        (seeds[1] / "eval" / "summary.json").write_text(json.dumps(summary))
    assert cli.main(["--runs", spec, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err
