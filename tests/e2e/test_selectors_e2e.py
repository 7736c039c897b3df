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
same data and seed: every step rolls out exactly the prompts GRPO rolls out, while the estimator
scores and learns and the would-be rejections are scored against the outcomes (`depo/shadow/*`).

The GRESO run is part of the default suite (about 3.5 minutes on a 2-core machine); the shadow run
(two launches, about 5 minutes) is slow and runs in .ci/run's CI_SLOW list; its fast counterpart in
the default suite is tests/trainer/test_depo_trainer.py's shadow test (the trainer's batches against
plain verl's, without model workers).
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "examples" / "run_depo_cpu.sh"
BATCH, N, POOL = 8, 4, 16


def _launch(
    out_dir: Path, log_name: str, steps: int, resume: str, mode: str = "depo", overrides=None, **knobs
) -> dict[int, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_")}
    env.update(
        POLICY="tiny",
        OUT_DIR=str(out_dir),
        TRAIN_SIZE=str(POOL),
        VAL_SIZE="12",
        BATCH=str(BATCH),
        N=str(N),
        STEPS=str(steps),
        SAVE_FREQ="2" if resume == "disable" else "1",
        TEST_FREQ="-1",
        RESUME_MODE=resume,
        REPORT="0",
        TIMEOUT_S="420",
        MODE=mode,
        EXPERIMENT=f"{log_name}_e2e",
        **knobs,
    )
    overrides = ["trainer.val_before_train=false", *(overrides or [])]
    if mode == "depo":
        overrides.append(f"depo.admissions_log={out_dir / f'admissions_{log_name}.jsonl'}")
    proc = subprocess.run(["bash", str(LAUNCHER), *overrides], env=env, capture_output=True, text=True, timeout=600)
    (out_dir / f"{log_name}.log").write_text(proc.stdout + "\n---- stderr ----\n" + proc.stderr)
    assert proc.returncode == 0, f"{log_name} failed; see {out_dir / log_name}.log\n{proc.stderr[-3000:]}"
    started = "DEPO estimator worker ready" in proc.stdout + proc.stderr
    assert started == (knobs.get("SELECTOR") in (None, "depo", "hybrid") and mode == "depo"), "estimator worker"
    records = [json.loads(x) for x in (out_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return {r["step"]: r["data"] for r in records if "training/global_step" in r["data"]}


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


@pytest.mark.ray
def test_greso_trains_without_an_estimator_and_resumes_its_state(tmp_path):
    steps = _launch(tmp_path, "run1", steps=2, resume="disable", overrides=GRESO, **GRESO_KNOBS)
    assert sorted(steps) == [1, 2]
    for step, m in steps.items():
        assert m["depo/prompts_kept"] == BATCH and "actor/pg_loss" in m
        assert not any(k.startswith("depo/estimator/") and k != "depo/estimator/predict_time_s" for k in m), step
        assert m["depo/selector/tracked_prompts"] > 0 and "depo/selector/p_easy" in m
    saved = _state(tmp_path, 2)
    selector = saved["selector"]
    assert selector["selector"] == "greso" and selector["counters"]["updates"] == 2
    history = selector["history"]
    assert len(history) == steps[2]["depo/selector/tracked_prompts"]

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


def _prompts(run_dir: Path, step: int) -> list[str]:
    """The prompts a step rolled out (verl's rollout dump: one line per response)."""
    lines = [json.loads(x) for x in (run_dir / "rollouts" / f"{step}.jsonl").read_text().splitlines()]
    return sorted(x["input"] for x in lines)


@pytest.mark.slow
@pytest.mark.ray
def test_shadow_mode_rolls_out_what_grpo_rolls_out_and_scores_its_would_be_rejections(tmp_path):
    from recipe.depo.estimator import build_tiny_encoder

    encoder = build_tiny_encoder(str(tmp_path / "encoder"), hidden_size=32, num_layers=1, num_heads=2)
    grpo = _launch(tmp_path / "grpo", "grpo", steps=2, resume="disable", mode="grpo")
    shadow_overrides = [
        "depo.filter.mode=shadow",
        f"depo.estimator.backbone={encoder}",
        "depo.estimator.max_length=32",
        "depo.estimator.hidden_dims=[16]",
        "depo.filter.window=[0.45,0.55]",  # a narrow window: some would-be rejections to score
    ]
    shadow = _launch(tmp_path / "shadow", "shadow", steps=2, resume="disable", overrides=shadow_overrides)
    assert sorted(grpo) == sorted(shadow) == [1, 2]
    for step in (1, 2):
        assert _prompts(tmp_path / "shadow", step) == _prompts(tmp_path / "grpo", step), step
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
def test_each_other_selector_trains_through_the_real_trainer(tmp_path, selector):
    """The posterior (no estimator) and the hybrid (estimator + history) for two steps each, past
    the warm-up, their state in the checkpoint."""
    overrides = []
    if selector == "hybrid":
        from recipe.depo.estimator import build_tiny_encoder

        encoder = build_tiny_encoder(str(tmp_path / "encoder"), hidden_size=32, num_layers=1, num_heads=2)
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
