"""recipe.depo.report under a careless user's inputs (issue 25): one line, no stale plot beside a
"not drawn" note, a partial evaluation shown as partial."""

import json
from pathlib import Path

import pytest
from test_report_tables import _step, _write_run  # the hand-made run directories of the tables test

from recipe.depo.report import cli


def _depo(folder):
    return _write_run(
        folder,
        [_step(1, 1.0, 0.5, depo__survival_rate=0.5, depo__pred_mean=0.4, depo__target_mean=0.5)],
        extra_config="depo:\n  enable: true\n",
    )


def test_a_plot_not_drawn_this_time_leaves_no_earlier_png(tmp_path):
    out = tmp_path / "out"
    cli.build({"DEPO": _depo(tmp_path / "depo")}, out)
    assert (out / "survival_rate.png").exists() and (out / "estimator_calibration.png").exists()
    _, text = cli.build({"GRPO": _write_run(tmp_path / "grpo", [_step(1, 1.0, 0.5)])}, out)
    assert "DEPO survival rate per step: not drawn (no DEPO run)" in text
    assert not (out / "survival_rate.png").exists() and not (out / "estimator_calibration.png").exists()
    assert not list(out.glob(".*.png"))  # no temporary file left either


def test_a_partial_evaluation_is_shown_as_partial(tmp_path):
    run = _write_run(tmp_path / "run", [_step(1, 1.0, 0.5)])
    (run / "eval").mkdir()
    sets = {
        "gsm8k": {"queries": 1, "total": 500, "partial": True, "acc": 100.0},
        "math500": {"queries": 500, "total": 500, "partial": False, "acc": 40.0},
    }
    (run / "eval" / "summary.json").write_text(json.dumps({"settings": {"n": 4}, "sets": sets, "partial": True}))
    report, text = cli.build({"R": run}, tmp_path / "out")
    assert report["runs"]["R"]["val_partial"] == {"gsm8k": "1 of 500"}
    assert report["runs"]["R"]["val_source"] == "eval/summary.json (Avg@4)"
    assert "| R | 100.0 (partial: 1 of 500) | 40.0 | 70.0 (partial) |" in text


@pytest.mark.parametrize(
    "case, message",
    [
        ("output_is_a_file", "--output {out}: a file, not a folder"),
        ("output_under_a_file", "is not a directory"),
        ("output_not_writable", "--output /proc/depo-report: cannot write"),
        ("metrics_is_a_dir", "metrics.jsonl: cannot read the metrics (verl's file logger) (Is a directory)"),
        ("config_is_a_dir", "config.yaml: not a readable YAML config"),
        ("summary_is_a_dir", "eval/summary.json: cannot read the evaluate summary (Is a directory)"),
        ("summary_acc_text", "sets.gsm8k.acc must be a percentage, got 'high'"),
        ("dump_not_records", "a line is not a rollout record with a numeric 'score'"),
    ],
)
def test_bad_input_is_one_line(case, message, tmp_path, capsys):
    run = _write_run(tmp_path / "run", [_step(1, 1.0, 0.5)])
    out = tmp_path / "out"
    if case == "output_is_a_file":
        out.write_text("keep")
    elif case == "output_under_a_file":
        (tmp_path / "f").write_text("keep")
        out = tmp_path / "f" / "report"
    elif case == "output_not_writable":
        out = Path("/proc/depo-report")  # not writable even by root
    elif case == "metrics_is_a_dir":
        (run / "metrics.jsonl").unlink()
        (run / "metrics.jsonl").mkdir()
    elif case == "config_is_a_dir":
        (run / "config.yaml").unlink()
        (run / "config.yaml").mkdir()
    elif case == "summary_is_a_dir":
        (run / "eval" / "summary.json").mkdir(parents=True)
    elif case == "summary_acc_text":
        (run / "eval").mkdir()
        (run / "eval" / "summary.json").write_text(json.dumps({"sets": {"gsm8k": {"acc": "high"}}}))
    elif case == "dump_not_records":
        (run / "rollouts").mkdir()
        (run / "rollouts" / "1.jsonl").write_text("[1, 2]\n")
    assert cli.main(["--runs", f"R={run}", "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message.format(out=out) in err and "\n" not in err, err
    if case == "output_is_a_file":
        assert out.read_text() == "keep"


def test_runs_given_twice_are_all_reported(tmp_path):
    a = _write_run(tmp_path / "a", [_step(1, 1.0, 0.5)])
    b = _write_run(tmp_path / "b", [_step(1, 2.0, 0.5)])
    assert cli.main(["--runs", f"A={a}", "--runs", f"B={b}", "--output", str(tmp_path / "out")]) == 0
    assert list(json.loads((tmp_path / "out" / "report.json").read_text())["runs"]) == ["A", "B"]


@pytest.mark.parametrize(
    "runs, output, message",
    [
        (["A={run}"], "", "--output is empty"),
        (["A|B={run}"], "out", "a run name may not hold '|'"),
    ],
)
def test_more_bad_arguments_are_one_line(runs, output, message, tmp_path, capsys, monkeypatch):
    run = _write_run(tmp_path / "run", [_step(1, 1.0, 0.5)])
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--runs", *(r.format(run=run) for r in runs), "--output", output]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert not (tmp_path / "report.md").exists() and not (tmp_path / "out").exists()
