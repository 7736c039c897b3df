"""DEPO end to end on CPU: `python -m recipe.depo.main_depo` through the CPU demo launcher, across the
warm-up boundary, then (transformers rollout) resumed from its checkpoint.

Run 1 trains 3 steps (step 1 is warm-up) and saves at step 3; run 2 resumes and trains step 4.
Checked: validation runs before training and at the last step; after warm-up every rolled-out prompt
was predicted inside the window or admitted by exploration and counted as such (from the admissions
log and the metrics); the estimator was updated every step from real rewards whose labels differ;
the zero-advantage share is logged; the resumed run continues the global step, the actor's optimizer
(Adam's step counter), the estimator (update count) and the filter (counters, carry-over); the
rollout server's log-probs agree with the actor's recomputation (so the per-step weight sync reaches
it); the last checkpoint is evaluated and the run reported. This is the default suite's end-to-end
test (CI) with the plugin's transformers rollout (`hf`, about 4 minutes on a 2-core machine); the
same run with verl's own vLLM rollout (`vllm`, the GPU launchers' code path, in the vLLM venv from
`bash examples/install_cpu.sh --vllm`; about 5 minutes) is slow: the default suite takes DEPO through
that rollout with run_depo_qwen7b.sh's two CPU steps (tests/launchers), which also evaluate its
checkpoint with evaluate's vLLM backend.

The `hf` run also masks zero-advantage groups out of the actor's loss
(`depo.advantage_filter.mask_zero_adv_groups`) over two PPO mini-batches a step, so the masking hook
runs in a real actor update and training goes on (exact masks, their restoration and the token-mean
denominator are checked in tests/trainer). The `vllm` run is not resumed: what run 2 checks is the
trainer's (the `hf` run checks it), and the vLLM server's weight sync is checked at every step of
run 1; its checkpoint is evaluated with evaluate's vLLM backend.
"""

import json

import pytest
from demo_launch import (
    BATCH,
    DEPO_ENTRY,
    TINY_RUN,
    N,
    launch,
    metric_records,
    train_steps,
    validation_steps,
    warmup_then_filter_overrides,
)

LOW, HIGH = 0.3, 0.7
# PPO mini-batches per step: the hf run trains with zero-advantage masking over two
MINI_BATCHES = {"hf": 2, "vllm": 1}


def _launch(out_dir, encoder: str, log_name: str, steps: int, save_freq: int, resume: str, test_freq=-1, rollout="hf"):
    knobs = dict(
        ROLLOUT=rollout,
        **TINY_RUN,  # the tiny policy, checked below (ensure_tiny_policy), and greedy validation
        STEPS=steps,
        SAVE_FREQ=save_freq,
        TEST_FREQ=test_freq,
        RESUME_MODE=resume,
        # vLLM's server start-up (engine core + worker processes) adds about a minute per run
        TIMEOUT_S=420 if rollout == "hf" else 540,
        **DEPO_ENTRY,
        EXPERIMENT="depo_e2e",
    )
    overrides = [
        f"trainer.val_before_train={str(test_freq > 0).lower()}",
        *warmup_then_filter_overrides(encoder, out_dir / f"admissions_{log_name}.jsonl", (LOW, HIGH)),
    ]
    if MINI_BATCHES[rollout] > 1:
        knobs["MINI_BATCH"] = BATCH // MINI_BATCHES[rollout]
        # (the launcher sizes the micro-batch from MINI_BATCH itself: it used to take BATCH * N,
        # which verl refuses when a mini-batch is smaller)
        overrides.append("depo.advantage_filter.mask_zero_adv_groups=true")
    proc = launch(out_dir, log_name, overrides, timeout=680, **knobs)
    # the rollout asked for is the one that served (Ray prefixes each actor's output with its class)
    assert ("(vLLMHttpServer pid=" in proc.stdout) == (rollout == "vllm"), f"{rollout} rollout not used; see the log"
    records = metric_records(out_dir)
    return train_steps(records), validation_steps(records)


def _admissions(out_dir, log_name: str):
    return [json.loads(x) for x in (out_dir / f"admissions_{log_name}.jsonl").read_text().splitlines()]


def _check_masking(steps: dict) -> None:
    """Zero-advantage groups were masked out of the loss (none when every group is), and the update ran."""
    for m in steps.values():
        groups = m["depo/zero_adv_group_frac"] * BATCH
        assert m["depo/masked_groups"] == (round(groups) if 0 < round(groups) < BATCH else 0)
        assert "actor/pg_loss" in m and "critic/advantages/mean" in m


@pytest.mark.ray
# the vLLM run is slow (about 5 minutes): run_depo_qwen7b.sh's two CPU steps in the default suite take
# DEPO through verl's vLLM rollout and evaluate its checkpoint with the vLLM backend
@pytest.mark.parametrize("rollout", ["hf", pytest.param("vllm", marks=pytest.mark.slow)])
def test_depo_across_warmup_then_resume(tmp_path, e2e_encoder, adam_steps, rollout, request):
    if rollout == "vllm":
        request.getfixturevalue("vllm_python")  # skips, or fails in CI, without the vLLM venv
    encoder = e2e_encoder
    updates = MINI_BATCHES[rollout]  # optimizer steps per training step
    steps, validated = _launch(
        tmp_path, encoder, "run1", steps=3, save_freq=3, resume="disable", test_freq=3, rollout=rollout
    )
    assert sorted(steps) == [1, 2, 3]
    assert validated[0] == 0 and 3 in validated, validated
    for step, m in steps.items():
        for key in ("critic/score/mean", "actor/pg_loss", "timing_s/gen", "timing_s/update_actor"):
            assert key in m, f"{key} missing at step {step}"
        # the server's log-probs are the actor's: every step's weight sync reached the server
        assert m["training/rollout_probs_diff_valid"] == 1
        assert m["training/rollout_probs_diff_mean"] < 1e-3, m["training/rollout_probs_diff_mean"]
        assert m["training/rollout_probs_diff_max"] < 1e-3, m["training/rollout_probs_diff_max"]

    for step, m in steps.items():
        assert m["depo/prompts_kept"] == BATCH
        assert 0.0 <= m["depo/zero_adv_group_frac"] <= 1.0
        # the estimator learnt from this step's real rewards
        assert m["depo/estimator/num_updates"] == step and m["depo/estimator/skipped"] == 0
        assert 0.0 <= m["depo/target_mean"] <= 1.0
    assert steps[1]["depo/warmup_active"] == 1.0 and steps[1]["depo/kept_warmup"] == BATCH
    for step in (2, 3):
        m = steps[step]
        assert m["depo/warmup_active"] == 0.0 and m["depo/kept_warmup"] == 0
        assert m["depo/kept_window"] + m["depo/kept_explore"] + m["depo/kept_fill"] == BATCH
    # labels were not all equal: the ranking loss found pairs apart by more than its threshold
    assert any(m["depo/estimator/num_pairs"] > 0 for m in steps.values())
    # nothing is rejected during warm-up; afterwards rejections depend on where this tiny
    # estimator's predictions land (tests/trainer checks the filter's decisions exactly)
    assert steps[1]["depo/rollouts_saved"] == 0
    assert steps[3]["depo/rollouts_saved"] == N * sum(
        x["decision"] == "rejected" for x in _admissions(tmp_path, "run1")
    )

    log = _admissions(tmp_path, "run1")
    rolled = [x for x in log if x["decision"] in ("warmup", "window", "explore", "fill")]
    assert [sum(x["step"] == s for x in rolled) for s in (1, 2, 3)] == [BATCH] * 3
    for x in log:
        if x["step"] == 1:
            assert x["decision"] in ("warmup", "carried")
        elif x["decision"] == "window":
            assert LOW <= x["prediction"] <= HIGH, x
        elif x["decision"] in ("explore", "rejected"):
            assert not LOW <= x["prediction"] <= HIGH, x
    for s in (2, 3):
        explored = sum(x["step"] == s and x["decision"] == "explore" for x in log)
        assert explored == steps[s]["depo/kept_explore"]

    if updates > 1:
        _check_masking(steps)

    ckpt = tmp_path / "checkpoints" / "global_step_3"
    state = json.loads((ckpt / "depo" / "state.json").read_text())
    assert state["global_steps"] == 3 and state["filter"]["counters"]["calls"] >= 3
    assert (ckpt / "depo" / "estimator" / "state.json").is_file()
    assert adam_steps(ckpt) == {3.0 * updates}

    last = 3
    if rollout == "hf":
        last = 4
        resumed, _ = _launch(tmp_path, encoder, "run2", steps=4, save_freq=1, resume="auto", rollout=rollout)
        assert sorted(resumed) == [4]
        m = resumed[4]
        assert m["training/rollout_probs_diff_max"] < 1e-3, m["training/rollout_probs_diff_max"]  # synced after resume
        # estimator continued (3 restored updates + this step's), not restarted
        assert m["depo/estimator/num_updates"] == 4
        assert m["depo/rollouts_saved"] >= steps[3]["depo/rollouts_saved"]
        # the carried prompts saved at step 3 were rolled out first at step 4
        assert m["depo/prompts_carried_in"] == min(len(state["filter"]["carry"]), BATCH)
        # a fresh optimizer would be at one step's updates
        assert adam_steps(tmp_path / "checkpoints" / "global_step_4") == {4.0 * updates}
        after = json.loads((tmp_path / "checkpoints" / "global_step_4" / "depo" / "state.json").read_text())
        assert after["filter"]["counters"]["calls"] > state["filter"]["counters"]["calls"]
        assert after["filter"]["counters"]["scanned"] >= state["filter"]["counters"]["scanned"]
        _check_masking(resumed)

    # The run directory is reportable and its checkpoint evaluable: the actor of the last step is
    # merged by verl's model merger and evaluated; the report reads every run's metrics (a resumed
    # run's first file was kept as a part when the second one started) and the evaluation.
    import torch
    from safetensors.torch import load_file

    from recipe.depo.demo.tiny_policy import ensure_tiny_policy
    from recipe.depo.evaluate import cli as evaluate
    from recipe.depo.report import cli as report

    parts = len(list(tmp_path.glob("metrics.*.jsonl")))
    assert (tmp_path / "config.yaml").is_file() and parts == (1 if last == 4 else 0)
    if rollout == "hf":
        data = str(tmp_path / "data" / "val.parquet")
        argv = ["--model", str(tmp_path / "checkpoints"), "--data", data, "--output", str(tmp_path / "eval"),
                "--n", "2", "--limit", "6", "--max-response-length", "12"]  # fmt: skip
        assert evaluate.main(argv) == 0
    else:  # the vLLM run's checkpoint (torch 2.11) in the vLLM venv, with evaluate's vLLM backend
        evaluate_in_vllm_venv = request.getfixturevalue("evaluate_in_vllm_venv")
        evaluate_in_vllm_venv(tmp_path / "checkpoints", tmp_path / "data" / "val.parquet", tmp_path / "eval")
    merged = load_file(tmp_path / "eval" / "merged_model" / "model.safetensors")
    start = load_file(ensure_tiny_policy() / "model.safetensors")  # the policy the launcher trained
    assert merged.keys() == start.keys() and all(merged[k].shape == start[k].shape for k in start)
    assert any(not torch.equal(merged[k].float(), start[k].float()) for k in start), "training changed no weight"
    built, _ = report.build({"DEPO": tmp_path}, tmp_path / "report")
    run = built["runs"]["DEPO"]
    assert run["steps"] == last and run["rollouts"] == last * BATCH * N and "prompts_scanned" in run
    assert run["val_source"] == "eval/summary.json (Avg@2)" and set(run["val"]) == {"val", "Avg"}
