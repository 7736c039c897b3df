"""DEPO end to end on CPU: `python -m recipe.depo.main_depo` through the CPU demo launcher, across the
warm-up boundary, then resumed from its checkpoint.

Run 1 trains 3 steps (step 1 is warm-up) and saves at step 3; run 2 resumes and trains step 4.
Checked: validation runs before training and at the last step; after warm-up every rolled-out prompt
was predicted inside the window or admitted by exploration and counted as such (from the admissions
log and the metrics); the estimator was updated every step from real rewards whose labels differ;
the zero-advantage share is logged; the resumed run continues the global step, the actor's optimizer
(Adam's step counter), the estimator (update count) and the filter (counters, carry-over); the
rollout server's log-probs agree with the actor's recomputation (so the per-step weight sync reaches
it). This is the default suite's end-to-end test (CI), run twice: with the plugin's transformers
rollout (`hf`, about 4 minutes on a 2-core machine) and with verl's own vLLM rollout (`vllm`, the GPU
launchers' code path, in the vLLM venv from `bash examples/install_cpu.sh --vllm`; about 6 minutes).
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "examples" / "run_depo_cpu.sh"
BATCH, N = 8, 4
LOW, HIGH = 0.3, 0.7


def _launch(
    out_dir: Path,
    encoder: str,
    log_name: str,
    steps: int,
    save_freq: int,
    resume: str,
    test_freq: int = -1,
    rollout: str = "hf",
):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_")}
    env.update(
        ROLLOUT=rollout,
        POLICY="tiny",  # the policy checked below (ensure_tiny_policy) and greedy validation
        OUT_DIR=str(out_dir),
        TRAIN_SIZE="96",
        VAL_SIZE="24",
        BATCH=str(BATCH),
        N=str(N),
        STEPS=str(steps),
        SAVE_FREQ=str(save_freq),
        TEST_FREQ=str(test_freq),
        RESUME_MODE=resume,
        # vLLM's server start-up (engine core + worker processes) adds about a minute per run
        TIMEOUT_S="420" if rollout == "hf" else "540",
        # the DEPO entry point (the launcher's knobs; its default may still be plain GRPO)
        ENTRY="recipe.depo.main_depo",
        CONFIG_NAME="depo_trainer",
        ALGO="grpo_depo",
        EXPERIMENT="depo_e2e",
    )
    overrides = [
        f"trainer.val_before_train={str(test_freq > 0).lower()}",
        f"depo.estimator.backbone={encoder}",
        "depo.estimator.max_length=32",
        "depo.estimator.hidden_dims=[16]",
        # a fast-moving estimator (heads only), so one warm-up step already moves predictions
        # off 0.5 and the filter has something to reject
        "depo.estimator.lr=0.1",
        "depo.estimator.backbone_lr_scale=0.0",
        "depo.filter.warmup_steps=1",
        f"depo.filter.window=[{LOW},{HIGH}]",
        "depo.filter.explore_rate=0.25",
        f"depo.admissions_log={out_dir / f'admissions_{log_name}.jsonl'}",
    ]
    proc = subprocess.run(["bash", str(LAUNCHER), *overrides], env=env, capture_output=True, text=True, timeout=680)
    (out_dir / f"{log_name}.log").write_text(proc.stdout + "\n---- stderr ----\n" + proc.stderr)
    assert proc.returncode == 0, (
        f"{log_name} failed; see {out_dir / log_name}.log\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    # the rollout asked for is the one that served (Ray prefixes each actor's output with its class)
    assert ("(vLLMHttpServer pid=" in proc.stdout) == (rollout == "vllm"), f"{rollout} rollout not used; see the log"
    records = [json.loads(x) for x in (out_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    _launch.validation_steps = [r["step"] for r in records if any(k.startswith("val-core/") for k in r["data"])]
    return {r["step"]: r["data"] for r in records if "training/global_step" in r["data"]}


def _admissions(out_dir: Path, log_name: str):
    return [json.loads(x) for x in (out_dir / f"admissions_{log_name}.jsonl").read_text().splitlines()]


@pytest.mark.ray
@pytest.mark.parametrize("rollout", ["hf", "vllm"])
def test_depo_across_warmup_then_resume(tmp_path, adam_steps, rollout, request):
    from recipe.depo.estimator import build_tiny_encoder

    if rollout == "vllm":
        request.getfixturevalue("vllm_python")  # skips, or fails in CI, without the vLLM venv
    encoder = build_tiny_encoder(str(tmp_path / "encoder"), hidden_size=32, num_layers=1, num_heads=2)
    steps = _launch(tmp_path, encoder, "run1", steps=3, save_freq=3, resume="disable", test_freq=3, rollout=rollout)
    assert sorted(steps) == [1, 2, 3]
    assert _launch.validation_steps[0] == 0 and 3 in _launch.validation_steps, _launch.validation_steps
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

    ckpt = tmp_path / "checkpoints" / "global_step_3"
    state = json.loads((ckpt / "depo" / "state.json").read_text())
    assert state["global_steps"] == 3 and state["filter"]["counters"]["calls"] >= 3
    assert (ckpt / "depo" / "estimator" / "state.json").is_file()
    assert adam_steps(ckpt) == {3.0}

    resumed = _launch(tmp_path, encoder, "run2", steps=4, save_freq=1, resume="auto", rollout=rollout)
    assert sorted(resumed) == [4]
    m = resumed[4]
    assert m["training/rollout_probs_diff_max"] < 1e-3, m["training/rollout_probs_diff_max"]  # synced after resume
    # estimator continued (3 restored updates + this step's), not restarted
    assert m["depo/estimator/num_updates"] == 4
    assert m["depo/rollouts_saved"] >= steps[3]["depo/rollouts_saved"]
    # the carried prompts saved at step 3 were rolled out first at step 4
    assert m["depo/prompts_carried_in"] == min(len(state["filter"]["carry"]), BATCH)
    assert adam_steps(tmp_path / "checkpoints" / "global_step_4") == {4.0}  # a fresh optimizer would be at 1
    after = json.loads((tmp_path / "checkpoints" / "global_step_4" / "depo" / "state.json").read_text())
    assert after["filter"]["counters"]["calls"] > state["filter"]["counters"]["calls"]
    assert after["filter"]["counters"]["scanned"] >= state["filter"]["counters"]["scanned"]

    # The run directory is reportable and its checkpoint evaluable: the actor of global_step_4 is
    # merged by verl's model merger and evaluated; the report reads both runs' metrics (the first
    # run's file was kept as a part when the second one started) and the evaluation.
    import torch
    from safetensors.torch import load_file

    from recipe.depo.demo.tiny_policy import ensure_tiny_policy
    from recipe.depo.evaluate import cli as evaluate
    from recipe.depo.report import cli as report

    assert (tmp_path / "config.yaml").is_file() and len(list(tmp_path.glob("metrics.*.jsonl"))) == 1
    argv = ["--model", str(tmp_path / "checkpoints"), "--data", str(tmp_path / "data" / "val.parquet"),
            "--output", str(tmp_path / "eval"), "--n", "2", "--limit", "6", "--max-response-length", "12"]  # fmt: skip
    if rollout == "hf":
        assert evaluate.main(argv) == 0
    else:
        vllm_python = request.getfixturevalue("vllm_python")
        venv_torch = subprocess.run(
            [vllm_python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if venv_torch != torch.__version__:
            # the light env cannot read shards pickled by another torch: one clear line, nothing written
            assert evaluate.main([*argv, "--output", str(tmp_path / "eval_light")]) == 2
            assert not (tmp_path / "eval_light" / "merged_model").exists()
        # a checkpoint is read by the torch that wrote it (torch 2.11's pickled device mesh does not
        # load in 2.13), so the vLLM run's checkpoint is merged and evaluated in the vLLM venv, with
        # evaluate's vLLM backend (offline LLM.generate on CPU)
        cmd = [vllm_python, "-m", "recipe.depo.evaluate", *argv, "--backend", "vllm"]
        env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_OMP_THREADS_BIND="nobind")
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        assert json.loads((tmp_path / "eval" / "summary.json").read_text())["settings"]["backend"] == "vllm"
    merged = load_file(tmp_path / "eval" / "merged_model" / "model.safetensors")
    start = load_file(ensure_tiny_policy() / "model.safetensors")  # the policy the launcher trained
    assert merged.keys() == start.keys() and all(merged[k].shape == start[k].shape for k in start)
    assert any(not torch.equal(merged[k].float(), start[k].float()) for k in start), "training changed no weight"
    built, _ = report.build({"DEPO": tmp_path}, tmp_path / "report")
    run = built["runs"]["DEPO"]
    assert run["steps"] == 4 and run["rollouts"] == 4 * BATCH * N and "prompts_scanned" in run
    assert run["val_source"] == "eval/summary.json (Avg@2)" and set(run["val"]) == {"val", "Avg"}


@pytest.mark.slow
@pytest.mark.ray
def test_depo_with_zero_adv_masking_trains_on_cpu(tmp_path):
    """The advantage-filtering hook in a real actor update: zero-advantage groups are masked out
    of the loss (two PPO mini-batches per step) and training goes on. Exact masks, their
    restoration and the token-mean denominator are checked in tests/trainer."""
    from recipe.depo.estimator import build_tiny_encoder

    encoder = build_tiny_encoder(str(tmp_path / "encoder"), hidden_size=32, num_layers=1, num_heads=2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_")}
    env.update(
        OUT_DIR=str(tmp_path),
        POLICY="tiny",
        TRAIN_SIZE="96",
        VAL_SIZE="24",
        BATCH=str(BATCH),
        N=str(N),
        MINI_BATCH=str(BATCH // 2),
        STEPS="2",
        SAVE_FREQ="-1",
        TEST_FREQ="-1",
        TIMEOUT_S="400",
        ENTRY="recipe.depo.main_depo",
        CONFIG_NAME="depo_trainer",
        ALGO="grpo_depo",
        EXPERIMENT="depo_mask",
    )
    overrides = [
        "trainer.val_before_train=false",
        f"depo.estimator.backbone={encoder}",
        "depo.estimator.max_length=32",
        "depo.filter.warmup_steps=1",
        "depo.advantage_filter.mask_zero_adv_groups=true",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={BATCH * N // 2}",
    ]
    proc = subprocess.run(["bash", str(LAUNCHER), *overrides], env=env, capture_output=True, text=True, timeout=500)
    (tmp_path / "run.log").write_text(proc.stdout + "\n---- stderr ----\n" + proc.stderr)
    assert proc.returncode == 0, f"see {tmp_path / 'run.log'}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines() if x.strip()]
    steps = {r["step"]: r["data"] for r in records if "training/global_step" in r["data"]}
    assert sorted(steps) == [1, 2]
    for m in steps.values():
        groups = m["depo/zero_adv_group_frac"] * BATCH
        assert m["depo/masked_groups"] == (round(groups) if 0 < round(groups) < BATCH else 0)
        assert "actor/pg_loss" in m and "critic/advantages/mean" in m
