"""python -m recipe.depo.report on small hand-made run directories whose tables are computed by hand."""

import json

import pytest

from recipe.depo.report import cli

N, BATCH = 4, 2


def _write_run(folder, records, *, n=N, batch=BATCH, gpus=8, nodes=2, extra_config="", name="metrics.jsonl"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(json.dumps({"step": s, "data": d}) + "\n" for s, d in records))
    (folder / "config.yaml").write_text(
        f"actor_rollout_ref:\n  rollout:\n    n: {n}\ndata:\n  train_batch_size: {batch}\n"
        f"trainer:\n  n_gpus_per_node: {gpus}\n  nnodes: {nodes}\n  device: cuda\n{extra_config}"
    )
    return folder


def _step(i, step_s, gen, **more):
    data = {"training/global_step": i, "timing_s/step": step_s, "timing_s/gen": gen}
    data.update({k.replace("__", "/"): v for k, v in more.items()})
    return i, data


@pytest.fixture
def runs(tmp_path):
    grpo = _write_run(
        tmp_path / "grpo",
        [
            (0, {"val-core/gsm8k/acc/mean@4": 0.5, "val-core/math500/acc/mean@4": 0.25}),
            _step(1, 10.0, 6.0, depo__zero_adv_group_frac=0.5),
            _step(2, 20.0, 8.0, depo__zero_adv_group_frac=0.0, **{"val-core/gsm8k/acc/mean@4": 0.6}),
        ],
    )
    # the last validation gives the accuracy; here it has only gsm8k (math500 at step 2 is absent)
    dapo = _write_run(
        tmp_path / "dapo",
        [
            _step(
                1,
                30.0,
                25.0,
                depo__zero_adv_group_frac=0.0,
                training__filter_groups__evicted_samples=3,
                training__filter_groups__discarded_surplus_samples=1,
            ),  # fmt: skip
            _step(2, 30.0, 25.0, depo__zero_adv_group_frac=0.0, training__filter_groups__evicted_samples=1),
        ],
        extra_config="algorithm:\n  filter_groups:\n    enable: true\n",
    )

    def depo_step(i, step_s, warm, scanned, saved, frac):
        return _step(
            i, step_s, 5.0, depo__warmup_active=warm, depo__prompts_kept=BATCH, depo__prompts_scanned=scanned,
            depo__rollouts_saved=saved, depo__zero_adv_group_frac=frac, depo__pred_mean=0.5, depo__target_mean=0.4,
            depo__survival_rate=1.0 if warm else 0.4, depo__estimator__predict_time_s=0.5,
            timing_s__depo_estimator_update=1.0,
        )  # fmt: skip

    depo = _write_run(
        tmp_path / "depo",
        [depo_step(1, 12.0, 1.0, 2, 0, 0.5), depo_step(2, 8.0, 0.0, 5, 8, 0.0), depo_step(3, 10.0, 0.0, 3, 12, 0.5)],
        extra_config="depo:\n  enable: true\n  estimator:\n    placement: separate\n",
    )
    (depo / "eval").mkdir()
    (depo / "eval" / "summary.json").write_text(
        json.dumps({"settings": {"n": 32}, "sets": {"math500": {"acc": 40.0}, "gsm8k": {"acc": 80.0}}, "Avg": 60.0})
    )
    novalid = _write_run(tmp_path / "noval", [_step(1, 36.0, 1.0)])
    return {"GRPO": grpo, "DAPO": dapo, "DEPO": depo, "NOVAL": novalid}


def test_report_numbers_by_hand(runs, tmp_path, capsys):
    assert cli.main(["--runs", *(f"{k}={v}" for k, v in runs.items()), "--output", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())["runs"]

    grpo = report["GRPO"]
    assert grpo["steps"] == 2
    assert grpo["seconds_per_step"] == {"generation": 7.0, "total": 15.0}
    # 30 s x 16 GPUs (8 per node x 2 nodes) / 3600
    assert grpo["gpu_hours"] == pytest.approx(30 * 16 / 3600)
    # 2 steps x 2 prompts x 4 rollouts; useful groups 2 x 0.5 + 2 x 1
    assert (grpo["rollouts"], grpo["useful_groups"]) == (16, 3)
    assert grpo["rollouts_per_useful_group"] == pytest.approx(16 / 3)
    assert grpo["zero_adv_share"] == pytest.approx(1 / 4)
    assert grpo["val"] == {"gsm8k": 60.0, "Avg": 60.0}  # last validation (step 2)

    dapo = report["DAPO"]
    # step 1 generated 2 trained + 3 zero-signal + 1 surplus groups, step 2 2 + 1: 9 groups
    assert dapo["prompts_rolled_out"] == 9 and dapo["rollouts"] == 36
    assert (dapo["dapo_zero_signal_groups"], dapo["dapo_surplus_groups"]) == (4, 1)
    assert dapo["useful_groups"] == 4 and dapo["rollouts_per_useful_group"] == 9.0
    assert dapo["zero_adv_share"] == pytest.approx(4 / 9)
    assert dapo["val"] == {} and dapo["val_source"] is None

    depo = report["DEPO"]
    assert depo["seconds_per_step_warmup"]["total"] == 12.0 and depo["warmup_steps_averaged"] == 1
    assert depo["seconds_per_step"]["total"] == 9.0 and depo["steps_averaged"] == 2
    assert depo["seconds_per_step"]["estimator_scoring"] == 0.5
    assert depo["seconds_per_step"]["estimator_update"] == 1.0
    assert depo["gpus"] == 17  # the separate estimator's GPU counts too
    assert depo["gpu_hours"] == pytest.approx(30 * 17 / 3600)
    assert (depo["prompts_scanned"], depo["prompts_rejected"]) == (10, 3)  # rollouts_saved 12 / n=4
    assert (depo["rollouts"], depo["useful_groups"]) == (24, 4)
    assert depo["zero_adv_share"] == pytest.approx(2 / 6)
    assert depo["val"] == {"gsm8k": 80.0, "math500": 40.0, "Avg": 60.0}
    assert depo["val_source"] == "eval/summary.json (Avg@32)"

    md = (tmp_path / "out" / "report.md").read_text()
    assert md == capsys.readouterr().out.split("(written to")[0].rstrip("\n") + "\n"
    assert "| run | GSM8K | MATH-500 | Avg | GPU-hours |" in md
    assert "| GRPO | 60.0 | – | 60.0 | 0.133 |" in md
    assert "| NOVAL | – | – | – | 0.16 |" in md  # no validation: empty cells, not zeros
    assert "| phase (s/step) | GRPO | DAPO | DEPO warm-up | DEPO filtered | NOVAL |" in md
    assert "| total step | 15.00 | 30.00 | 12.00 | 9.00 | 36.00 |" in md
    assert "| DAPO | 9 | 36 | 4 | 9.0 | 44% | 4 / 1 | – |" in md
    assert "| DEPO | 6 | 24 | 4 | 6.0 | 33% | – | 10 / 3 |" in md
    for png in ("zero_adv_share", "estimator_calibration", "survival_rate", "val_vs_rollouts"):
        assert (tmp_path / "out" / f"{png}.png").read_bytes()[:4] == b"\x89PNG"


def test_gpus_per_run_overrides_the_config(runs, tmp_path):
    report, _ = cli.build({"G": runs["GRPO"]}, tmp_path / "out", gpus_per_run=4)
    assert report["runs"]["G"]["gpu_hours"] == pytest.approx(30 * 4 / 3600)


def test_skip_steps_leaves_leading_steps_out_of_table2_only(runs, tmp_path):
    report, _ = cli.build({"G": runs["GRPO"]}, tmp_path / "out", skip_steps=1)
    assert report["runs"]["G"]["seconds_per_step"]["total"] == 20.0
    assert report["runs"]["G"]["gpu_hours"] == pytest.approx(30 * 16 / 3600)


def test_resumed_run_parts_are_merged(tmp_path):
    """verl truncates metrics.jsonl on start; the launcher keeps the earlier run as metrics.<time>.jsonl.
    A resume from the step-2 checkpoint redoes step 3: the later part's step 3 counts, once."""
    run = _write_run(
        tmp_path / "run",
        [_step(1, 1.0, 0.5), _step(2, 2.0, 0.5), _step(3, 100.0, 0.5)],
        name="metrics.1700000000.jsonl",
    )
    _write_run(run, [(2, {"val-core/x/acc/mean@1": 0.5}), _step(3, 3.0, 0.5), _step(4, 4.0, 0.5)])
    report, _ = cli.build({"R": run}, tmp_path / "out")
    assert report["runs"]["R"]["steps"] == 4
    assert report["runs"]["R"]["seconds_per_step"]["total"] == 2.5
    assert report["runs"]["R"]["val"] == {"x": 50.0, "Avg": 50.0}


def test_a_torn_last_line_is_ignored(tmp_path):
    run = _write_run(tmp_path / "run", [_step(1, 1.0, 0.5)])
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 2, "data": {"timing_s/st')
    report, _ = cli.build({"R": run}, tmp_path / "out")
    assert report["runs"]["R"]["steps"] == 1


@pytest.mark.parametrize(
    "case, message",
    [
        ("no_metrics", "run R: no metrics.jsonl in"),
        ("not_json", "metrics.jsonl line 2 is not JSON"),
        ("not_a_record", 'metrics.jsonl line 1: expected {"step": int, "data": {...}}'),
        ("no_config", "run R: no config.yaml in"),
        ("bad_config", "data.train_batch_size must be a positive integer"),
        ("no_dir", "is not a directory"),
        ("bad_spec", "--runs 'R': expected NAME=DIR"),
        ("twice", "the name 'R' is given twice"),
        ("bad_summary", "eval/summary.json is not JSON"),
    ],
)
def test_bad_input_is_one_clear_error(case, message, tmp_path, capsys):
    run = _write_run(tmp_path / "run", [_step(1, 1.0, 0.5), _step(2, 1.0, 0.5)])
    runs = [f"R={run}"]
    if case == "no_metrics":
        (run / "metrics.jsonl").unlink()
    elif case == "not_json":
        lines = (run / "metrics.jsonl").read_text().splitlines()
        (run / "metrics.jsonl").write_text(lines[0] + "\nstep,data\n")
    elif case == "not_a_record":
        (run / "metrics.jsonl").write_text("[1, 2]\n")
    elif case == "no_config":
        (run / "config.yaml").unlink()
    elif case == "bad_config":
        (run / "config.yaml").write_text("actor_rollout_ref:\n  rollout:\n    n: 4\n")
    elif case == "no_dir":
        runs = [f"R={tmp_path / 'nowhere'}"]
    elif case == "bad_spec":
        runs = ["R"]
    elif case == "twice":
        runs = [f"R={run}", f"R={run}"]
    elif case == "bad_summary":
        (run / "eval").mkdir()
        (run / "eval" / "summary.json").write_text("{")
    assert cli.main(["--runs", *runs, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err


def test_selection_table_reads_the_last_totals_and_counts_guard_steps(tmp_path):
    def step(i, **more):
        return _step(i, 10.0, 5.0, depo__prompts_kept=BATCH, depo__prompts_scanned=BATCH, depo__rollouts_saved=0,
                     depo__zero_adv_group_frac=0.5, **more)  # fmt: skip

    shadow = _write_run(
        tmp_path / "shadow",
        [
            step(
                1,
                depo__calib_error=0.2,
                depo__shadow__would_reject_total=0.5,
                depo__shadow__precision_total=1.0,
                depo__shadow__recall_total=float("nan"),
            ),
            step(
                2,
                depo__calib_error=0.1,
                depo__shadow__would_reject_total=0.25,
                depo__shadow__precision_total=0.5,
                depo__shadow__recall_total=0.75,
            ),
        ],  # fmt: skip
        extra_config="depo:\n  filter:\n    mode: shadow\n",
    )
    guarded = _write_run(
        tmp_path / "guarded",
        [
            step(
                1,
                depo__guard_active=0.0,
                depo__audit__false_rejection_rate_total=0.25,
                depo__audit__kept_useful_rate_total=0.5,
            ),
            step(2, depo__guard_active=1.0),
            step(3, depo__guard_active=1.0),
        ],  # fmt: skip
        extra_config="depo:\n  filter:\n    selector:\n      name: greso\n",
    )
    grpo = _write_run(tmp_path / "grpo", [_step(1, 10.0, 5.0)])
    out = tmp_path / "out"
    assert cli.main(["--runs", f"S={shadow}", f"G={guarded}", f"P={grpo}", "--output", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())["runs"]
    assert report["P"]["selection"] is None
    s = report["S"]["selection"]
    assert (s["selector"], s["mode"], s["shadow_precision"], s["shadow_recall"]) == ("depo", "shadow", 0.5, 0.75)
    assert s["calib_error_mean"] == pytest.approx(0.15) and s["guard_steps"] is None
    g = report["G"]["selection"]
    assert (g["selector"], g["mode"], g["guard_steps"], g["audit_false_rejection_rate"]) == ("greso", "filter", 2, 0.25)
    md = (out / "report.md").read_text()
    assert "| S | depo | shadow | 0.150 | 25% / 50% / 75% | – / – | – |" in md
    assert "| G | greso | filter | – | – / – / – | 25% / 50% | 2 |" in md
    assert "| P |" not in md.split("## Selection")[1]


def _checkpoint_eval(run, step, per_query, partial=False):
    folder = run / "eval_steps" / f"step_{step}"
    folder.mkdir(parents=True)
    acc = 100.0 * sum(per_query) / len(per_query)
    rows = [json.dumps({"index": i, "n": 4, "acc": a}) for i, a in enumerate(per_query)]
    (folder / "val.jsonl").write_text("".join(row + "\n" for row in rows))
    summary = {"settings": {"n": 4}, "sets": {"val": {"acc": acc, "queries": len(per_query), "partial": partial}}}
    (folder / "summary.json").write_text(json.dumps({**summary, "Avg": acc, "partial": partial}))


def test_checkpoints_evaluated_after_training_are_the_runs_validation_curve(tmp_path):
    """The learning benchmark validates no run in the trainer: it evaluates each saved checkpoint into
    eval_steps/step_N afterwards. The report reads those as the run's validations (series and
    first/last with the SE over queries), ahead of in-trainer ones, and refuses a partial one."""
    from recipe.depo.report import read_run
    from recipe.depo.report.runs import ReportError
    from recipe.depo.report.tables import run_report, series

    run = _write_run(
        tmp_path / "run",
        [_step(1, 2.0, 1.0), _step(2, 2.0, 1.0), (2, {"val-core/arithmetic/acc/mean@4": 0.9})],
    )
    _checkpoint_eval(run, 0, [0.0, 0.25, 0.0, 0.25])
    _checkpoint_eval(run, 2, [0.5, 0.25, 0.75, 0.5])
    (run / "eval_steps" / "step_x").mkdir()  # not a step: ignored
    report = run_report(read_run("r", run))
    # per-query accuracies 0, 0.25, 0, 0.25: mean 0.125, sample variance 0.0625 / 3, SE its root / 2
    first_se = 100 * (0.0625 / 3) ** 0.5 / 2
    assert report["val_ends"]["first"] == {"step": 0, "acc": 12.5, "se": pytest.approx(first_se)}
    last = report["val_ends"]["last"]
    # per-query accuracies 0.5, 0.25, 0.75, 0.5: mean 0.5, sample SD sqrt(0.125/3), SE SD / 2
    assert last["step"] == 2 and last["acc"] == 50.0 and last["se"] == pytest.approx(100 * (0.125 / 3) ** 0.5 / 2)
    # rollouts by step 2: two steps of BATCH prompts x N
    assert series(read_run("r", run))["val_by_step"] == [(0, 0.0, 12.5), (2, 2 * BATCH * N, 50.0)]

    _checkpoint_eval(run, 4, [1.0, 1.0], partial=True)
    with pytest.raises(ReportError, match=r"step_4/summary.json is a partial evaluation"):
        read_run("r", run)
    (run / "eval_steps" / "step_4" / "summary.json").unlink()
    (run / "eval_steps" / "step_2" / "val.jsonl").write_text('{"index": 0}\n')
    with pytest.raises(ReportError, match=r"step_2/val.jsonl line 1 has no numeric 'acc'"):
        read_run("r", run)
