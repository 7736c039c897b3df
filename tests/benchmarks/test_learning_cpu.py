"""benchmarks/learning_cpu.py: the curve and target arithmetic, bad input, and (slow) --quick end to end."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = str(REPO / "benchmarks")


@pytest.fixture(scope="module")
def bench(learning):
    return learning


def _curve(*points):
    return [{"step": s, "rollouts": r, "seconds": t, "val_acc": a} for s, r, t, a in points]


def test_first_reaching_gives_the_first_point_at_or_above_the_target_and_null_when_never(bench):
    curve = _curve((0, 0, 0.0, 10.0), (5, 320, 50.0, 19.9), (10, 640, 100.0, 25.0), (15, 960, 150.0, 22.0))
    assert bench.first_reaching(curve, 20.0, "rollouts") == 640
    assert bench.first_reaching(curve, 20.0, "seconds") == 100.0
    assert bench.first_reaching(curve, 25.0, "rollouts") == 640  # reaching it exactly counts
    assert bench.first_reaching(curve, 25.5, "rollouts") is None
    assert bench.first_reaching(curve, None, "rollouts") is None


def test_summary_mean_se_target_and_a_method_that_never_reaches_it(bench):
    runs = [
        {"method": "grpo", "seed": 0, "curve": _curve((0, 0, 0, 10.0), (5, 320, 40, 30.0))},
        {"method": "grpo", "seed": 1, "curve": _curve((0, 0, 0, 12.0), (5, 320, 44, 34.0))},
        {"method": "depo", "seed": 0, "curve": _curve((0, 0, 0, 10.0), (5, 200, 30, 20.0))},
        {"method": "depo", "seed": 1, "curve": _curve((0, 0, 0, 12.0), (5, 220, 34, 24.0))},
    ]
    acct = {
        "grpo": [{"rollouts": 320, "useful_groups": 40, "zero_adv_share": 0.5}] * 2,
        "depo": [
            {"rollouts": 200, "useful_groups": 30, "zero_adv_share": 0.2},
            {"rollouts": 220, "useful_groups": 33, "zero_adv_share": 0.4},
        ],
    }
    summary, target = bench.summarize(runs, acct)
    assert target == 32.0
    grpo, depo = summary["grpo"], summary["depo"]
    assert grpo["final_acc_mean"] == 32.0 and math.isclose(grpo["final_acc_se"], 2.0)  # sd 2.83 / sqrt 2
    assert grpo["first_acc_mean"] == 11.0
    assert grpo["rollouts_to_target"] == 320 and grpo["seconds_to_target"] == 42
    assert depo["rollouts_to_target"] is None and depo["seconds_to_target"] is None
    assert grpo["rollouts_to_target_vs_grpo"] == 1.0 and depo["rollouts_to_target_vs_grpo"] is None
    # a DEPO that gets there first: its rollouts over GRPO's
    runs[2]["curve"][1]["val_acc"] = runs[3]["curve"][1]["val_acc"] = 40.0
    assert bench.summarize(runs, acct)[0]["depo"]["rollouts_to_target_vs_grpo"] == 210 / 320
    assert math.isclose(depo["useful_groups_per_rollout"], 63 / 420)
    assert math.isclose(depo["zero_adv_share"], 0.3)
    assert math.isclose(depo["mean_curve"][1]["val_acc_se"], 2.0)


def test_seeds_with_different_step_counts_average_over_the_steps_all_have(bench):
    long = _curve((0, 0, 0, 10.0), (5, 320, 40, 20.0), (10, 640, 80, 30.0))
    short = _curve((0, 0, 0, 12.0), (5, 320, 40, 22.0))
    averaged = bench.mean_curve([long, short])
    assert [p["step"] for p in averaged] == [0, 5]
    assert averaged[1]["val_acc"] == 21.0
    one = bench.mean_curve([long])
    assert one[2]["val_acc"] == 30.0 and one[2]["val_acc_se"] is None


def test_curve_from_a_run_directory_counts_dapo_discards_and_step_seconds(bench, tmp_path):
    from recipe.depo.report import read_run

    (tmp_path / "config.yaml").write_text(
        "actor_rollout_ref:\n  rollout:\n    n: 4\ndata:\n  train_batch_size: 8\n"
        "algorithm:\n  filter_groups:\n    enable: true\n"
    )
    records = [
        {"step": 0, "data": {"val-core/arithmetic/acc/mean@4": 0.1}},
        {
            "step": 1,
            "data": {"training/global_step": 1, "timing_s/step": 10.0, "training/filter_groups/evicted_samples": 2},
        },
        {"step": 2, "data": {"training/global_step": 2, "timing_s/step": 12.5}},
        {"step": 2, "data": {"val-core/arithmetic/acc/mean@4": 0.25}},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    curve = bench.curve_from_run(read_run("x", tmp_path))
    assert curve == [
        {"step": 0, "rollouts": 0, "seconds": 0.0, "val_acc": 10.0, "val_se": None},
        {"step": 2, "rollouts": (8 + 2) * 4 + 8 * 4, "seconds": 22.5, "val_acc": 25.0, "val_se": None},
    ]
    # with verl's validation dump (trainer.validation_data_dir) the point carries its SE over prompts
    (tmp_path / "validation").mkdir()
    rows = [("p1", 1.0), ("p1", 0.0), ("p2", 0.0), ("p2", 0.0), ("p3", 1.0), ("p3", 1.0)]
    (tmp_path / "validation" / "2.jsonl").write_text(
        "".join(json.dumps({"input": p, "output": "x", "score": a, "acc": a, "step": 2}) + "\n" for p, a in rows)
    )
    assert bench.curve_from_run(read_run("x", tmp_path))[1]["val_se"] == round(100 * 0.5 / math.sqrt(3), 3)
    # and the run's report shows the first and last validation with it
    from recipe.depo.report.tables import run_report

    ends = run_report(read_run("x", tmp_path))["val_ends"]
    assert ends["first"] == {"step": 0, "acc": 10.0, "se": None}
    assert ends["last"]["acc"] == 25.0 and math.isclose(ends["last"]["se"], 100 * 0.5 / math.sqrt(3))


def test_checkpoints_are_evaluated_per_step_and_the_curve_reads_them(bench, make_verl_checkpoint, tmp_path):
    """--validate checkpoints: the warm start and each saved checkpoint evaluated (verl's model merger,
    evaluate's hf backend) at the trainer's validation settings; the curve takes its points from
    them and leaves checkpoint saving out of the training seconds."""
    from data_prep.arithmetic import build_rows
    from data_prep.common import write_parquet_atomic
    from recipe.depo.demo.tiny_policy import ensure_tiny_policy
    from recipe.depo.report import read_run

    policy = str(ensure_tiny_policy())
    val = tmp_path / "val.parquet"
    write_parquet_atomic(build_rows("test", seed=7, count=5), val)
    run = tmp_path / "run"
    for step in (2, 4):
        make_verl_checkpoint(policy, run / "checkpoints" / f"global_step_{step}")
    (run / "config.yaml").write_text(
        f"actor_rollout_ref:\n  model:\n    path: {policy}\n  rollout:\n    n: 4\n"
        "    val_kwargs:\n      n: 2\n      do_sample: true\n      temperature: 1.0\n      top_p: 1.0\n"
        f"data:\n  train_batch_size: 8\n  max_response_length: 6\n  val_files: {val}\n"
    )
    records = [
        {"step": 1, "data": {"training/global_step": 1, "timing_s/step": 10.0}},
        {"step": 2, "data": {"training/global_step": 2, "timing_s/step": 12.0, "timing_s/save_checkpoint": 2.5}},
        {"step": 3, "data": {"training/global_step": 3, "timing_s/step": 11.0}},
        {"step": 4, "data": {"training/global_step": 4, "timing_s/step": 13.0, "timing_s/save_checkpoint": 3.0}},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    bench.evaluate_checkpoints(run, seed=3, log=tmp_path / "eval.log")

    assert sorted(p.name for p in (run / "eval_steps").iterdir()) == ["step_0", "step_2", "step_4"]
    # only the last checkpoint is kept (DEPO's carry the estimator's optimizer state)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["global_step_4"]
    summaries = [json.loads((run / "eval_steps" / f"step_{s}" / "summary.json").read_text()) for s in (0, 2, 4)]
    assert summaries[0]["settings"]["model"] == str(Path(policy).resolve())
    for summary in summaries:
        assert {k: summary["settings"][k] for k in ("n", "temperature", "max_response_length", "seed", "backend")} == {
            "n": 2, "temperature": 1.0, "max_response_length": 6, "seed": 3, "backend": "hf"
        }  # fmt: skip
    # the same weights at every step and the same sampling seed: the same draws, the same accuracy
    assert summaries[0]["Avg"] == summaries[1]["Avg"] == summaries[2]["Avg"]
    # the report reads the final step's evaluation as the run's final accuracy
    assert json.loads((run / "eval" / "summary.json").read_text()) == summaries[2]
    assert read_run("x", run).eval_summary == summaries[2]

    per_query = [json.loads(x)["acc"] for x in (run / "eval_steps" / "step_2" / "val.jsonl").read_text().splitlines()]
    m = sum(per_query) / 5
    se = 100 * math.sqrt(sum((a - m) ** 2 for a in per_query) / 4 / 5)
    curve = bench.curve_from_run(read_run("x", run))
    assert [(p["step"], p["rollouts"], p["seconds"]) for p in curve] == [(0, 0, 0.0), (2, 64, 19.5), (4, 128, 40.5)]
    assert curve[1]["val_acc"] == round(summaries[1]["Avg"], 3)
    assert math.isclose(curve[1]["val_se"], se, abs_tol=1e-3)

    # a half-written evaluation is not read as a point
    (run / "eval_steps" / "step_2" / "summary.json").write_text(json.dumps({**summaries[1], "partial": True}))
    from recipe.depo.report.runs import ReportError

    with pytest.raises(ReportError, match="partial evaluation"):
        bench.curve_from_run(read_run("x", run))


def test_validation_se_is_over_prompts_not_answers(tmp_path):
    from recipe.depo.report.tables import validation_se

    # prompt means 0.75, 0.25, 0.5, 0.5: mean 0.5, sample sd sqrt(0.125/3), SE sd/2
    rows = [("a", [1, 1, 1, 0]), ("b", [0, 0, 1, 0]), ("c", [1, 0, 1, 0]), ("d", [0, 1, 0, 1])]
    path = tmp_path / "10.jsonl"
    path.write_text("".join(json.dumps({"input": p, "score": float(x)}) + "\n" for p, xs in rows for x in xs))
    assert math.isclose(validation_se(path), 100 * math.sqrt(0.125 / 3) / 2)
    assert validation_se(tmp_path / "missing.jsonl") is None
    path.write_text(json.dumps({"input": "only", "score": 1.0}) + "\n")
    assert validation_se(path) is None


def _cli(args, cwd, timeout=120, extra_env=None):
    env = {**os.environ, "PYTHONPATH": str(Path(BENCHMARKS).parent), **(extra_env or {})}
    return subprocess.run(
        [sys.executable, os.path.join(BENCHMARKS, "learning_cpu.py"), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--methods", "grpo,ppo"], "--methods: unknown method 'ppo'"),
        (["--seeds", ""], "--seeds is empty"),
        (["--seeds", " , "], "--seeds is empty"),
        (["--seeds", "0,x"], "--seeds must be comma-separated integers"),
        (["--steps", "0"], "--steps must be a positive integer"),
        (["--run-timeout", "0"], "--run-timeout must be a positive integer"),
        (["--tier-mix", "3,3,3"], "--tier-mix must be 6 comma-separated whole numbers"),
        (["--noisy-recipe", "pretrained"], "--noisy-recipe must be one of finetune, scratch, got 'pretrained'"),
        (["--poll-s", "0"], "--poll-s must be a positive number of seconds, got '0'"),
        (["--poll-s", "soon"], "--poll-s must be a positive number of seconds, got 'soon'"),
        (["--poll-s", "inf"], "--poll-s must be a positive number of seconds, got 'inf'"),
        (["--estimator", "no/such/encoder"], "--estimator must be an encoder directory holding config.json"),
    ],
)
def test_bad_flags_are_one_line_and_write_nothing(args, message, tmp_path):
    out = tmp_path / "out"
    proc = _cli([*args, "--output", str(out)], tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not out.exists()


def test_an_output_directory_with_another_benchmarks_results_is_refused_untouched(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text('{"benchmark": "selection_sim"}')
    (out / "learning.md").write_text("someone else's table")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = _cli(["--quick", "--output", str(out)], tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "not this benchmark's" in lines[0], proc.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_an_output_directory_made_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    marker = {"benchmark": "learning_cpu", "steps": 99, "run_env": {}}
    (out / "learning_cpu.json").write_text(json.dumps(marker))
    proc = _cli(["--quick", "--output", str(out)], tmp_path)
    assert proc.returncode == 2 and "other settings (steps, run_env differ)" in proc.stderr
    assert json.loads((out / "learning_cpu.json").read_text()) == marker


def test_the_data_is_built_once_and_kept_only_when_it_is_these_settings_data(bench, tmp_path):
    """Every run trains on the benchmark's one data set (seed DATA_SEED, not the run's seed): a data
    directory holding other data (another tier mix here) is refused naming the file, untouched."""
    import argparse

    data = tmp_path / "data"
    args = argparse.Namespace(train_size=24, val_size=12, tier_mix=(3, 3, 3, 1, 1, 1))
    bench.build_data(data, args)
    built = {p.name: p.read_bytes() for p in data.iterdir()}
    bench.build_data(data, args)  # kept
    with pytest.raises(bench.BenchError, match=r"train\.parquet holds other problems, not the arithmetic data of"):
        bench.build_data(data, argparse.Namespace(**{**vars(args), "tier_mix": (1,) * 6}))
    assert {p.name: p.read_bytes() for p in data.iterdir()} == built


def test_the_tier_mix_and_poll_always_and_the_warm_start_recipe_only_off_default_reach_the_launcher(bench):
    """The data's tier mix is always a setting (the benchmark builds the data and the launcher must
    not rebuild it otherwise); the default warm-start recipe adds no knob, so runs finished before
    --noisy-recipe existed stay reusable, and another recipe is part of the marker."""
    import argparse

    args = argparse.Namespace(
        validate="checkpoints",
        steps=35,
        batch=16,
        n=4,
        test_freq=5,
        val_n=4,
        val_size=240,
        train_size=1200,
        lr=None,
        tier_mix=(3, 3, 3, 1, 1, 1),
        poll_s="0.2",
        estimator=None,
    )
    default = bench.run_env(argparse.Namespace(**vars(args), noisy_recipe="finetune"))
    assert default["TIER_MIX"] == "3,3,3,1,1,1" and "NOISY_RECIPE" not in default
    # the poll interval sets every run's seconds: runs timed at another interval are not reused
    assert default["POLL_S"] == "0.2"
    assert bench.run_env(argparse.Namespace(**{**vars(args), "poll_s": "2"}, noisy_recipe="finetune")) == {
        **default,
        "POLL_S": "2",
    }
    scratch = bench.run_env(argparse.Namespace(**vars(args), noisy_recipe="scratch"))
    assert scratch == {**default, "NOISY_RECIPE": "scratch"}
    even = bench.run_env(argparse.Namespace(**{**vars(args), "tier_mix": (1,) * 6}, noisy_recipe="finetune"))
    assert even == {**default, "TIER_MIX": "1,1,1,1,1,1"}
    # another estimator is a setting too (absent at the default, so earlier runs stay reusable)
    assert "ESTIMATOR" not in default
    tiny = bench.run_env(argparse.Namespace(**{**vars(args), "estimator": "/enc/tiny"}, noisy_recipe="finetune"))
    assert tiny == {**default, "ESTIMATOR": "/enc/tiny"}


@pytest.mark.parametrize("knob", ["ESTIMATOR", "WINDOW", "POLL_S"])
def test_a_launcher_knob_exported_in_the_shell_is_refused_naming_it(knob, tmp_path):
    """An exported knob would reach every run through the environment but not the recorded
    settings, so a result (or a reused run) would silently be another setting's."""
    out = tmp_path / "out"
    proc = _cli(["--quick", "--output", str(out)], tmp_path, extra_env={knob: "x"})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{knob} set in the environment" in lines[0], proc.stderr
    assert not out.exists()


def test_the_launcher_knobs_are_the_ones_it_reads(bench):
    knobs = bench.launcher_knobs()
    # what the benchmark sets per run, and knobs that would change a run if inherited
    assert {"STEPS", "BATCH", "SEED", "ESTIMATOR", "WINDOW", "POLL_S", "TIER_MIX", "VAL_SIZE"} <= set(knobs)
    assert "VLLM_VENV" not in knobs and len(knobs) == len(set(knobs))


@pytest.mark.slow
@pytest.mark.ray
def test_quick_comparison_end_to_end(tmp_path):
    """--quick through verl's real trainer: GRPO (main_ppo) and DEPO, one seed, 10 steps, a checkpoint
    saved at every step and evaluated after each run with the warm start (step 0)."""
    from recipe.depo.report import read_run
    from recipe.depo.report.tables import run_report

    out = tmp_path / "learning"
    # two real runs (~5 min each here): the bad-input checks' 120 s would kill it mid-run
    proc = _cli(["--quick", "--output", str(out)], tmp_path, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "learning.json").read_text())
    assert {(r["method"], r["seed"]) for r in result["runs"]} == {("grpo", 0), ("depo", 0)}
    assert set(result["summary"]) == {"grpo", "depo"}
    for key in ("final_acc_mean", "final_acc_se", "rollouts_to_target", "seconds_to_target"):
        assert key in result["summary"]["depo"]
    assert result["target_acc"] == result["summary"]["grpo"]["final_acc_mean"]
    for run in result["runs"]:
        data = read_run(run["method"], run["run_dir"])
        last = run["curve"][-1]
        steps = sorted(data.steps)
        assert last["step"] == steps[-1] == 10
        # the curve's totals are the metrics file's own: rollouts as the report counts them, step seconds summed
        assert last["rollouts"] == run_report(data)["rollouts"]
        # training seconds: the steps' own, less the checkpoint saves made only to evaluate them
        trained = sum(data.steps[s]["timing_s/step"] - data.steps[s].get("timing_s/save_checkpoint", 0) for s in steps)
        assert math.isclose(last["seconds"], trained, abs_tol=0.01)
        # a point per evaluated checkpoint (every step) and the warm start; no in-trainer validation
        assert [p["step"] for p in run["curve"]] == list(range(11))
        assert not data.validations
        assert math.isclose(data.eval_summary["Avg"], last["val_acc"], abs_tol=1e-3)
    grpo = next(r for r in result["runs"] if r["method"] == "grpo")["curve"]
    assert len(grpo) == 11 and all(0 <= p["val_acc"] <= 100 for p in grpo)
    # the warm start learns to box its answers: GRPO's validation rose (measured +7 points in 10
    # steps, one validation's SE ~1.5; docs/compare.md, "Learning on CPU")
    assert grpo[-1]["val_acc"] > grpo[0]["val_acc"], grpo
    assert all(p["val_se"] is not None and p["val_se"] > 0 for p in grpo), grpo
    for png in ("val_vs_rollouts.png", "val_vs_seconds.png", "val_vs_step.png"):
        assert (out / png).is_file()
    assert "| GRPO |" in (out / "learning.md").read_text()


def test_the_benchmarks_recipe_names_are_the_warm_starts(bench):
    from recipe.depo.demo.noisy_policy import RECIPES

    assert bench.NOISY_RECIPES == RECIPES
