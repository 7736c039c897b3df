"""GRESO through the real trainer on CPU (`python -m recipe.depo.main_depo` via the CPU demo launcher,
`SELECTOR=greso`), then resumed from its checkpoint.

A 16-prompt pool and 8 prompts a step: run 1 trains steps 1-2 (the first pass; no prompt has a
history yet) and saves; run 2 resumes and trains step 3, the second pass, in which every prompt
has a history. GRESO's exploration probabilities are pinned at 0, so a prompt whose last group had
zero variance is skipped with probability 1 - 0^z = 1: which prompts step 3 rolls out follows
exactly from the selector state the checkpoint restored. Also checked: no estimator worker starts
(no `depo/estimator/*` metric, no `estimator/` in the checkpoint, no worker start in the log), the
selector learns every step (`depo/selector/*`), and its checkpointed state carries on across the
resume.

Shadow mode (`depo.filter.mode=shadow`) against plain GRPO through verl's own entry point on the
same data and seed (the `grpo_run` fixture's two steps, which test_e2e_cpu_grpo.py checks and
resumes): every step rolls out exactly the prompts GRPO rolls out, while the estimator scores and
learns and the would-be rejections are scored against the outcomes (`depo/shadow/*`).

The shadow run and GRESO's first launch are part of the default suite (about 2.5 minutes and 115 s on
a 2-core machine). GRESO's resume (a second launch, 93 s more) is slow: its fast
counterparts, named in tests/layout/test_ci_coverage.py, test the restored selection without a
launch.
"""

import json
from pathlib import Path

import pytest
from demo_launch import BATCH, TINY_RUN, N, launch, metric_records, rolled_out_prompts, train_steps

POOL = 16


def _launch(
    out_dir: Path, log_name: str, steps: int, resume: str, mode: str = "depo", overrides=None, **knobs
) -> dict[int, dict]:
    settings = {
        **TINY_RUN,
        "TRAIN_SIZE": POOL,
        "VAL_SIZE": 12,
        "STEPS": steps,
        "SAVE_FREQ": 2 if resume == "disable" else 1,
        "TEST_FREQ": -1,
        "RESUME_MODE": resume,
        "REPORT": 0,
        "TIMEOUT_S": 420,
        "MODE": mode,
        "EXPERIMENT": f"{log_name}_e2e",
        **knobs,
    }
    overrides = ["trainer.val_before_train=false", *(overrides or [])]
    if mode == "depo":
        overrides.append(f"depo.admissions_log={out_dir / f'admissions_{log_name}.jsonl'}")
    proc = launch(out_dir, log_name, overrides, timeout=600, **settings)
    started = "DEPO estimator worker ready" in proc.stdout + proc.stderr
    assert started == (settings.get("SELECTOR") in (None, "depo", "hybrid") and mode == "depo"), "estimator worker"
    return train_steps(metric_records(out_dir))


GRESO_KNOBS = {"SELECTOR": "greso", "WARMUP": "0"}  # warm-up is for the estimator; GRESO has none
GRESO = [
    "trainer.total_epochs=2",  # verl stops at its epoch count: step 3 is the pool's second pass
    # every pass visits the whole pool (a step may scan past a pass's end)
    f"depo.filter.max_scan={4 * POOL}",
    *(f"depo.filter.selector.greso.{k}=0.0" for k in ("p_easy", "p_hard", "p_min", "p_max")),
]


def _state(out_dir: Path, step: int) -> dict:
    folder = out_dir / "checkpoints" / f"global_step_{step}" / "depo"
    assert not (folder / "estimator").exists()
    return json.loads((folder / "state.json").read_text())["filter"]


@pytest.fixture(scope="module")
def greso_run(tmp_path_factory) -> tuple[Path, dict[int, dict]]:
    """Steps 1-2 with GRESO, saved at step 2: one launch for the default suite's test and the slow resume."""
    out_dir = tmp_path_factory.mktemp("greso")
    return out_dir, _launch(out_dir, "run1", steps=2, resume="disable", overrides=GRESO, **GRESO_KNOBS)


@pytest.mark.ray
def test_greso_trains_without_an_estimator(greso_run):
    tmp_path, steps = greso_run
    assert sorted(steps) == [1, 2]
    for step, m in steps.items():
        assert m["depo/prompts_kept"] == BATCH and "actor/pg_loss" in m
        assert not any(k.startswith("depo/estimator/") and k != "depo/estimator/predict_time_s" for k in m), step
        assert m["depo/selector/tracked_prompts"] > 0 and "depo/selector/p_easy" in m
    saved = _state(tmp_path, 2)
    selector = saved["selector"]
    assert selector["selector"] == "greso" and selector["counters"]["updates"] == 2
    assert len(selector["history"]) == steps[2]["depo/selector/tracked_prompts"]


@pytest.mark.slow
@pytest.mark.ray
def test_greso_resumes_its_state(greso_run):
    tmp_path, _ = greso_run
    saved = _state(tmp_path, 2)
    history = saved["selector"]["history"]
    resumed = _launch(tmp_path, "run2", steps=3, resume="auto", overrides=GRESO, **GRESO_KNOBS)
    assert sorted(resumed) == [3]
    after = _state(tmp_path, 3)["selector"]
    assert after["counters"]["updates"] == 3  # the restored selector learnt once more, not from scratch
    log = [json.loads(x) for x in (tmp_path / "admissions_run2.jsonl").read_text().splitlines()]
    decided = [x for x in log if x["step"] == 3 and x["decision"] != "carried"]
    assert decided and all(x["selector"] == "greso" for x in decided)
    # step 3 decided every fresh prompt by the history restored from step 2's checkpoint (the
    # prompts carried over from step 2 were kept then, so are rolled out first)
    carried = {entry[0] for entry in saved["carry"]}
    for x in decided:
        if x["uid"] in carried or x["decision"] == "fill":
            continue
        z = history.get(x["prompt_id"], [0])[0]
        assert (x["decision"] == "rejected") == (z > 0), (x, history.get(x["prompt_id"]))
    both = log + [json.loads(x) for x in (tmp_path / "admissions_run1.jsonl").read_text().splitlines()]
    assert resumed[3]["depo/rollouts_saved"] == N * sum(x["decision"] == "rejected" for x in both)
    # a prompt not rolled out at step 3 keeps its step-2 history exactly
    rolled = {x["prompt_id"] for x in decided if x["decision"] in ("window", "explore", "fill")}
    for pid, entry in history.items():
        if pid not in rolled:
            assert after["history"][pid] == entry, pid


@pytest.mark.ray
def test_shadow_mode_rolls_out_what_grpo_rolls_out_and_scores_its_would_be_rejections(tmp_path, e2e_encoder, grpo_run):
    shadow_overrides = [
        "depo.filter.mode=shadow",
        f"depo.estimator.backbone={e2e_encoder}",
        "depo.estimator.max_length=32",
        "depo.estimator.hidden_dims=[16]",
        "depo.filter.window=[0.45,0.55]",  # a narrow window: some would-be rejections to score
    ]
    # on the GRPO run's data, seed and batch (its validation does not change which prompts train)
    same_data = {k: grpo_run["knobs"][k] for k in ("TRAIN_SIZE", "VAL_SIZE", "BATCH", "N")}
    shadow = _launch(tmp_path / "shadow", "shadow", steps=2, resume="disable", overrides=shadow_overrides, **same_data)
    assert sorted(train_steps(grpo_run["records"])) == sorted(shadow) == [1, 2]
    for step in (1, 2):
        assert rolled_out_prompts(tmp_path / "shadow", step) == grpo_run["prompts"][step], step
        m = shadow[step]
        assert m["depo/prompts_kept"] == BATCH and m["depo/rollouts_saved"] == 0
        assert m["depo/estimator/num_updates"] == step  # the estimator learnt, as with filtering
        assert 0.0 <= m["depo/shadow/would_reject"] <= 1.0 and 0.0 <= m["depo/calib_error"] <= 1.0
        for key in ("depo/shadow/precision", "depo/shadow/recall"):
            assert key in m
    log = [json.loads(x) for x in (tmp_path / "shadow" / "admissions_shadow.jsonl").read_text().splitlines()]
    assert len(log) == 2 * BATCH and {x["mode"] for x in log} == {"shadow"}
    rejected = sum(x["decision"] == "rejected" for x in log)
    total = shadow[2]["depo/shadow/would_reject_total"]
    assert total == rejected / (2 * BATCH)


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("selector", ["posterior", "hybrid"])
def test_each_other_selector_trains_through_the_real_trainer(tmp_path, selector, request):
    """The posterior (no estimator) and the hybrid (estimator + history) for two steps each, past
    the warm-up, their state in the checkpoint."""
    overrides = []
    if selector == "hybrid":
        encoder = request.getfixturevalue("e2e_encoder")
        overrides = [
            f"depo.estimator.backbone={encoder}",
            "depo.estimator.max_length=32",
            "depo.estimator.hidden_dims=[16]",
        ]
    knobs = {"SELECTOR": selector, "WARMUP": "1"}
    steps = _launch(tmp_path, selector, steps=2, resume="disable", overrides=overrides, **knobs)
    assert sorted(steps) == [1, 2]
    for m in steps.values():
        assert m["depo/prompts_kept"] == BATCH and m["depo/selector/tracked_prompts"] > 0
        assert ("depo/estimator/num_updates" in m) == (selector == "hybrid")
    if selector == "hybrid":
        assert steps[2]["depo/selector/prior_weight"] > 0
    folder = tmp_path / "checkpoints" / "global_step_2" / "depo"
    saved = json.loads((folder / "state.json").read_text())["filter"]["selector"]
    assert saved["selector"] == selector and saved["counters"]["updates"] == 2 and len(saved["counts"]) > 0
    assert (folder / "estimator").is_dir() == (selector == "hybrid")
