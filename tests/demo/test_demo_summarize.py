"""The demo summary reads verl's file-logger JSONL and rollout dumps."""

import json

from recipe.depo.demo import summarize


def test_summary_from_verl_outputs(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    records = [
        {"step": 0, "data": {"val-core/arithmetic/acc/mean@1": 0.40}},
        {"step": 1, "data": {"training/global_step": 1, "timing_s/step": 9.0, "critic/score/mean": 0.2}},
        {
            "step": 2,
            "data": {
                "training/global_step": 2,
                "timing_s/step": 3.0,
                "critic/score/mean": 0.4,
                "val-core/arithmetic/acc/mean@1": 0.45,
            },
        },
    ]
    metrics.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    rollouts = tmp_path / "rollouts"
    rollouts.mkdir()
    # two prompts x 2 rollouts: prompt a all solved (no signal), prompt b mixed
    rows = [("a_0_0", 1.0), ("a_1_0", 1.0), ("b_0_0", 0.0), ("b_1_0", 1.0)]
    (rollouts / "1.jsonl").write_text("\n".join(json.dumps({"uid": u, "score": s, "input": u[0]}) for u, s in rows))
    text = summarize.summarize(metrics, rollouts, wall_seconds=120, status=0)
    assert "training steps    : 2" in text
    assert "first 9.0s, then mean 3.0s" in text
    assert "0.400 (step 0, before training) -> 0.450 (step 2)" in text
    assert "50% of 2 at step 1" in text
    assert "2.0 min" in text


def test_missing_files_do_not_crash(tmp_path):
    text = summarize.summarize(tmp_path / "none.jsonl", tmp_path / "none", status=3)
    assert "FAILED (exit 3)" in text and "training steps    : 0" in text


def test_depo_lines_from_trainer_metrics(tmp_path):
    import json

    from recipe.depo.demo.summarize import summarize

    def step(i, warm, scanned, kept, saved, zero, mae):
        return {
            "step": i,
            "data": {
                "training/global_step": i,
                "depo/prompts_scanned": scanned,
                "depo/prompts_kept": kept,
                "depo/prompts_carried_in": 1 if i == 3 else 0,
                "depo/rollouts_saved": saved,
                "depo/warmup_active": warm,
                "depo/zero_adv_group_frac": zero,
                "depo/calib_mae": mae,
                "depo/spearman": 0.5,
            },
        }

    records = [step(1, 1.0, 8, 8, 0, 0.5, 0.4), step(2, 0.0, 12, 8, 16, 0.25, 0.3), step(3, 0.0, 10, 8, 24, 0.125, 0.2)]
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    text = summarize(path, group_size=4)
    assert "30 scored by the estimator, 24 rolled out (1 of them carried over)" in text
    # 24 prompts x 4 spent, 24 saved (cumulative, last step): GRPO would have spent 120
    assert "96 spent, 24 saved vs plain GRPO on the same prompts (120)" in text
    assert "50% in warm-up (1 steps) -> 19% after (2 steps)" in text
    assert "|pred - mean@k| 0.400 (first step) -> 0.200 (last)" in text
    # a GRPO run has no depo metrics and no DEPO lines
    path.write_text(json.dumps({"step": 1, "data": {"training/global_step": 1}}))
    assert "DEPO prompts" not in summarize(path, group_size=4)
