"""benchmarks/selection_sim.py: the simulated policy, the oracles and the metrics, by hand."""

import json
import math

import numpy as np
import pytest


def logit(p):
    return math.log(p / (1.0 - p))


def tiny_world(sim, accuracies, hidden_sd=0.0, speed_sd=0.0, drift=0.0, hidden=None):
    """A pool whose prompts have exactly the given accuracies at step 0 (one topic, speed 1)."""
    k = len(sim.TOPICS)
    workload = sim.Workload(
        name="tiny",
        description="hand-made",
        topic_ease=(0.0,) * k,
        topic_weight=(1.0,) * k,
        topic_speed=(1.0,) * k,
        hidden_sd=hidden_sd,
        speed_sd=speed_sd,
        drift=drift,
    )
    n = len(accuracies)
    pool = sim.Pool(
        texts=[f"find the sum of {i} plus {i}?" for i in range(n)],
        topic=np.zeros(n, dtype=np.int64),
        ease=np.array([logit(p) for p in accuracies]),
        hidden=np.zeros(n) if hidden is None else np.asarray(hidden, dtype=np.float64),
        speed_noise=np.ones(n),
    )
    return workload, pool, sim.SimPolicy(workload, pool, seed=0)


def test_useful_share_by_hand(sim):
    # n = 2 at p = 0.5: P(one right, one wrong) = 2 * 0.25 = 0.5; at p = 0 or 1 nothing is useful.
    np.testing.assert_allclose(sim.useful_share(np.array([0.5, 0.0, 1.0, 0.9]), 2), [0.5, 0.0, 0.0, 0.18])
    assert sim.useful_share(np.array([0.5]), 8)[0] == pytest.approx(1 - 2 / 256)


def test_true_accuracy_drifts_with_speed(sim):
    _, _, policy = tiny_world(sim, [0.5, 0.2], drift=1.0)
    # drift 1.0 logit per 100 steps: after 50 steps every logit is up 0.5.
    np.testing.assert_allclose(
        policy.true_p(np.array([0, 1]), 50), [1 / (1 + math.exp(-0.5)), 1 / (1 + math.exp(-(logit(0.2) + 0.5)))]
    )


def test_text_oracle_is_the_truth_without_hidden_noise(sim):
    _, _, policy = tiny_world(sim, [0.3, 0.6, 0.95], drift=0.7)
    ids = np.arange(3)
    np.testing.assert_allclose(policy.text_p(ids, 40), policy.true_p(ids, 40), atol=1e-12)


def test_text_oracle_averages_over_the_hidden_offset(sim):
    # ease 0 and a symmetric hidden offset: E[sigmoid(h)] = 1/2 exactly, whatever h is per prompt.
    _, _, policy = tiny_world(sim, [0.5, 0.5], hidden_sd=2.0, hidden=[1.5, -0.7])
    assert policy.text_p(np.array([0, 1]), 0) == pytest.approx([0.5, 0.5], abs=1e-12)
    assert policy.true_p(np.array([0]), 0)[0] == pytest.approx(1 / (1 + math.exp(-1.5)))
    # ease logit(0.8), sd 1: compare with an independent fine-grid integral of the normal density.
    _, _, policy = tiny_world(sim, [0.8], hidden_sd=1.0)
    h = np.linspace(-8, 8, 20001)
    density = np.exp(-0.5 * h**2) / math.sqrt(2 * math.pi)
    expected = float(np.sum(density / (1 + np.exp(-(logit(0.8) + h)))) * (h[1] - h[0]))
    assert policy.text_p(np.array([0]), 0)[0] == pytest.approx(expected, abs=1e-4)


def test_rollouts_use_common_random_numbers(sim):
    _, _, policy = tiny_world(sim, [0.5, 0.4, 0.7])
    a, lp_a = policy.rollout(np.array([0, 1, 2]), step=3, n=8)
    b, lp_b = policy.rollout(np.array([2, 0]), step=3, n=8)
    assert (b[0], b[1]) == (a[2], a[0]) and (lp_b[0], lp_b[1]) == (lp_a[2], lp_a[0])
    assert np.all(lp_a <= 0) and np.all((a >= 0) & (a <= 8))


def test_stream_reshuffles_per_epoch_and_counts_passes(sim):
    stream = sim.PromptStream(5, seed=0)
    first = stream.take(3)
    rest = stream.take(4)  # 2 from epoch 1, then 2 from a fresh permutation
    assert sorted(np.concatenate([first, rest[:2]]).tolist()) == [0, 1, 2, 3, 4]
    assert stream.passes == pytest.approx(7 / 5)


def test_window_oracle_keeps_exactly_the_in_window_prompts(sim):
    # Accuracies 0.5, 0.95, 0.1, 0.7 (window [0.15, 0.85]): prompts 0 and 3 are the kept two.
    _, pool, policy = tiny_world(sim, [0.5, 0.95, 0.1, 0.7])
    stream = sim.PromptStream(len(pool), seed=0)
    cfg = sim.FilterConfig(warmup_steps=0, max_scan=8)
    selector = sim.FilterSelector("oracle_true", stream, 2, cfg, policy.true_p)
    choice = selector.choose(step=1)
    assert sorted(choice.ids.tolist()) == [0, 3]
    assert choice.scanned == 4 and choice.reasons == ["window", "window"]


def test_window_oracle_fills_from_the_centre_when_the_scan_cap_hits(sim):
    # Nothing in the window; max_scan = batch: the two closest to 0.5 are filled in.
    _, pool, policy = tiny_world(sim, [0.99, 0.9, 0.05, 0.01])
    stream = sim.PromptStream(len(pool), seed=0)
    selector = sim.FilterSelector("oracle_true", stream, 2, sim.FilterConfig(warmup_steps=0, max_scan=4), policy.true_p)
    choice = selector.choose(step=1)
    assert sorted(choice.ids.tolist()) == [1, 2] and choice.reasons == ["fill", "fill"]


def test_summary_and_gains_by_hand(sim):
    settings = sim.SimSettings(steps=3, batch=4, n=2, warmup=1)
    rec = {
        "useful": [0, 2, 4],
        "groups": [4, 4, 4],
        "scanned": [4, 8, 12],
        "predict_s": [0.0, 0.5, 0.7],
        "update_s": [0.0, 0.1, 0.3],
        "passes": [0.1, 0.2, 0.3],
    }
    s = sim.summarize(rec, settings)
    # Steps 2 and 3: 6 useful groups of 8, 16 rollouts.
    assert s["useful_per_rollout"] == pytest.approx(6 / 16)
    assert s["zero_adv_share"] == pytest.approx(2 / 8)
    assert s["scanned_per_step"] == 10 and s["estimator_s_per_step"] == pytest.approx(0.8)
    summaries = {
        "uniform": {"useful_per_rollout": 0.05},
        "oracle_text": {"useful_per_rollout": 0.10},
        "depo": {"useful_per_rollout": 0.09},
    }
    sim.add_gains(summaries)
    assert summaries["depo"]["gain"] == pytest.approx(1.8)
    assert summaries["depo"]["of_text_oracle"] == pytest.approx(0.9)
    assert summaries["depo"]["of_text_excess"] == pytest.approx(0.8)
    assert "NOT MET" in sim.goal_verdict(summaries, "depo")  # text oracle 2.0x: needs >= 1.9x too
    summaries["depo"].update(gain=1.9, of_text_oracle=0.95)
    assert "MET" in sim.goal_verdict(summaries, "depo") and "NOT" not in sim.goal_verdict(summaries, "depo")


def test_variants_parse_and_defaults_come_from_the_yaml(sim):
    est, flt = sim.variant_settings("paper+lr=1e-3+filter.explore_rate=0.1+head=residual")
    assert est["lr"] == 1e-3 and est["head"] == "residual" and flt["explore_rate"] == 0.1
    est, flt = sim.variant_settings("defaults")
    assert "backbone" not in est and "placement" not in est
    assert tuple(flt["window"]) == (0.15, 0.85)
    with pytest.raises(ValueError, match="unknown selector"):
        sim.variant_settings("nonsense")


def test_benchmark_runs_end_to_end_on_a_small_setting(sim, tmp_path):
    # ~15 s on 2 cores: in the default suite (it was slow-only, so a break would go unseen)
    out = tmp_path / "sim.json"
    png = tmp_path / "sim.png"
    args = ["--steps", "24", "--warmup", "6", "--batch", "16", "--pool-size", "400", "--workloads", "even,easy"]
    args += ["--selectors", "uniform,oracle_true,oracle_text,paper,defaults", "--json", str(out), "--png", str(png)]
    assert sim.main(args) == 0
    data = json.loads(out.read_text())
    for workload in ("even", "easy"):
        summaries = data["workloads"][workload]["summaries"]
        assert summaries["uniform"]["gain"] == 1.0
        # Exact accuracies beat the text-only ones, which beat uniform sampling.
        assert summaries["oracle_true"]["gain"] > summaries["oracle_text"]["gain"] > 1.0
        for name in ("paper", "defaults"):
            assert summaries[name]["estimator_s_per_step"] > 0
            assert len(data["workloads"][workload]["records"][name]["useful"]) == 24
    assert png.stat().st_size > 0


def test_history_oracle_without_outcomes_is_the_text_oracle(sim):
    _, _, policy = tiny_world(sim, [0.3, 0.6, 0.9], hidden_sd=1.5, speed_sd=0.4, drift=0.5, hidden=[1.0, -2.0, 0.3])
    oracle = sim.HistoryOracle(policy)
    ids = np.arange(3)
    np.testing.assert_allclose(oracle.score(ids, 40), policy.text_p(ids, 40), atol=1e-6)


def test_history_oracle_learns_a_prompts_hidden_offset_from_its_outcomes(sim):
    # Text says 0.5 for both; the hidden offsets make them 0.88 and 0.12. After 400 rollouts each
    # at the true rates, the posterior mean sits near the truth; the unseen prompt stays at 0.5.
    _, _, policy = tiny_world(sim, [0.5, 0.5, 0.5], hidden_sd=2.0, hidden=[2.0, -2.0, 0.0])
    oracle = sim.HistoryOracle(policy)
    truth = policy.true_p(np.arange(2), 0)
    oracle.observe(np.arange(2), np.rint(truth * 400), 400, step=0)
    np.testing.assert_allclose(oracle.score(np.arange(3), 0), [*truth, 0.5], atol=0.01)


def test_history_oracle_useful_share_is_the_posterior_chance_of_a_mixed_group(sim):
    # A prompt whose outcomes pin it to ~0.88: its chance of a mixed group of 8 is near
    # 1 - 0.88^8 - 0.12^8; the unseen one averages 1 - p^8 - (1 - p)^8 over its text-given prior,
    # which is below the value at its mean (Jensen), so a loose posterior near 0.5 is still kept.
    _, _, policy = tiny_world(sim, [0.5, 0.5], hidden_sd=2.0, hidden=[2.0, 0.0])
    oracle = sim.HistoryOracle(policy)
    truth = policy.true_p(np.arange(1), 0)
    oracle.observe(np.arange(1), np.rint(truth * 400), 400, step=0)
    mean, useful = oracle.mean_and_useful(np.arange(2), 0, 8)
    np.testing.assert_allclose(useful[0], 1 - mean[0] ** 8 - (1 - mean[0]) ** 8, atol=0.02)
    assert useful[1] < 1 - mean[1] ** 8 - (1 - mean[1]) ** 8
    assert oracle.mean_and_useful(np.arange(2), 0, 0)[1].tolist() == [0.0, 0.0]  # n = 0: not computed


def test_history_oracle_row_reports_the_better_of_its_two_rules(sim, tmp_path):
    out = tmp_path / "rules.json"
    args = ["--workloads", "hidden", "--epochs", "2", "--pool-size", "60", "--batch", "8", "--warmup", "2"]
    args += ["--selectors", "uniform,oracle_history", "--json", str(out), "--png", ""]
    assert sim.main(args) == 0
    summary = json.loads(out.read_text())["workloads"]["hidden"]["summaries"]["oracle_history"]
    assert set(summary["rules"]) == set(sim.HISTORY_RULES) and summary["rule"] in sim.HISTORY_RULES
    assert summary["useful_per_rollout"] == max(summary["rules"].values())
    assert summary["rules"][summary["rule"]] == summary["useful_per_rollout"]


def test_hidden_workload_text_explains_about_a_third(sim):
    assert 0.3 < sim.text_share(sim.WORKLOADS["hidden"]) < 0.37
    for name in ("even", "easy", "bimodal"):
        assert sim.text_share(sim.WORKLOADS[name]) > 0.8


def test_gains_above_uniform_against_each_oracle_by_hand(sim):
    summaries = {
        "uniform": {"useful_per_rollout": 0.05},
        "oracle_text": {"useful_per_rollout": 0.10},
        "oracle_history": {"useful_per_rollout": 0.15},
        "hybrid": {"useful_per_rollout": 0.14},
        "defaults": {"useful_per_rollout": 0.09},
        "greso": {"useful_per_rollout": 0.06},
        "posterior": {"useful_per_rollout": 0.07},
    }
    sim.add_gains(summaries)
    # hybrid gains 2.8x; the history oracle 3x: (2.8 - 1) / (3 - 1) = 90%; uniform scores 0%.
    assert summaries["hybrid"]["of_history_excess"] == pytest.approx(0.9)
    assert summaries["defaults"]["of_history_excess"] == pytest.approx(0.4)
    assert summaries["defaults"]["of_text_excess"] == pytest.approx(0.8)
    assert summaries["uniform"]["of_history_excess"] == 0.0
    lines = sim.peer_goals(summaries, epochs=3)
    assert [line.rsplit(": ", 1)[1] for line in lines] == ["MET", "MET", "MET"]
    assert len(sim.peer_goals(summaries, epochs=1)) == 2  # hybrid vs defaults only when prompts repeat
    summaries["posterior"].update(gain=3.0)
    assert sim.peer_goals(summaries, epochs=1)[0].endswith("NOT MET")


def test_module_selector_fills_from_the_centre_and_learns_from_outcomes(sim):
    # GRESO after every prompt was all right once and p_easy is 0.05: almost everything is
    # skipped, the scan cap hits and the fill completes the batch.
    from recipe.depo.selectors import GresoConfig, GresoSelector

    _, pool, policy = tiny_world(sim, [0.999] * 30)
    greso = GresoSelector(GresoConfig(p_easy=0.05))
    greso.update([str(i) for i in range(30)], np.ones(30), n=8)
    stream = sim.PromptStream(len(pool), seed=0)
    run = sim.ModuleSelector("greso", stream, batch=4, selector=greso, max_scan=8, n=8)
    choice = run.choose(step=1)
    assert len(choice.ids) == 4 and choice.scanned == 8
    assert choice.reasons.count("fill") == 4 - choice.reasons.count("window")
    successes, logprob = policy.rollout(choice.ids, 1, 8)
    run.observe(1, choice.ids, successes / 8, logprob)
    assert all(greso.history[str(i)][0] == 2 for i in choice.ids if successes[list(choice.ids).index(i)] == 8)


def test_epochs_sets_the_run_length_from_the_pool(sim, tmp_path):
    out = tmp_path / "e.json"
    args = ["--workloads", "hidden", "--epochs", "2", "--pool-size", "50", "--batch", "8", "--warmup", "2"]
    args += ["--selectors", "uniform,greso,posterior,oracle_history", "--json", str(out), "--png", ""]
    assert sim.main(args) == 0
    data = json.loads(out.read_text())
    records = data["workloads"]["hidden"]["records"]
    assert len(records["uniform"]["useful"]) == 13  # ceil(2 x 50 / 8)
    assert records["uniform"]["passes"][-1] == pytest.approx(13 * 8 / 50)
    assert data["settings"]["epochs"] == 2
    assert set(data["workloads"]["hidden"]["summaries"]["greso"]) >= {"gain", "of_history_excess"}


def test_benchmark_orders_oracles_above_defaults_above_uniform_on_the_easy_workload(sim, tmp_path):
    """A small run of the real estimator and filter (about 15 s): a change that breaks selection
    drops ``defaults`` toward uniform and fails here."""
    out = tmp_path / "order.json"
    args = ["--steps", "40", "--warmup", "8", "--batch", "16", "--pool-size", "400", "--workloads", "easy"]
    args += ["--selectors", "uniform,defaults,hybrid,oracle_text,oracle_history", "--json", str(out), "--png", ""]
    assert sim.main(args) == 0
    s = json.loads(out.read_text())["workloads"]["easy"]["summaries"]
    assert s["oracle_history"]["gain"] > s["oracle_text"]["gain"] > s["defaults"]["gain"] > 1.5
    assert s["hybrid"]["gain"] > 1.5 and s["uniform"]["gain"] == 1.0


def test_combined_tables_list_every_run_with_its_goals(sim):
    s = {
        "uniform": {"useful_per_rollout": 0.05},
        "greso": {"useful_per_rollout": 0.06},
        "defaults": {"useful_per_rollout": 0.09, "estimator_s_per_step": 0.25},
        "hybrid": {"useful_per_rollout": 0.11, "estimator_s_per_step": 0.3},
        "oracle_history": {"useful_per_rollout": 0.12},
    }
    sim.add_gains(s)
    text = sim.combined_tables([("easy", 1.0, s), ("easy", 3.0, s)])
    assert "| easy     | 1      |                 0.0500 | 1.20x |" in text
    # hybrid gains 2.2x of the oracle's 2.4x: (2.2 - 1) / (2.4 - 1) = 86%.
    assert "MET / NOT MET |" in text and "MET / MET / NOT MET |" in text and "86%" in text


def test_peer_rows_are_the_recipes_selector_modules_with_checked_overrides(sim, capsys):
    from recipe.depo.selectors import GresoSelector, HybridSelector

    _, pool, policy = tiny_world(sim, [0.5] * 8)
    settings = sim.SimSettings(steps=2, batch=4, warmup=1, pool_size=8)
    row = sim.build_selector("greso+p_min=0.1", pool, policy, settings, backbone_dir="unused")
    assert isinstance(row.selector, GresoSelector) and row.selector.config.p_min == 0.1
    assert row.estimator is None and row.max_scan == 32
    assert sim.module_settings("hybrid+prior_weight=4").hybrid.prior_weight == 4.0
    assert sim.is_module_selector("hybrid") and not sim.is_module_selector("defaults")
    assert HybridSelector.needs_estimator and not GresoSelector.needs_estimator
    with pytest.raises(SystemExit):
        sim.main(["--selectors", "uniform,hybrid+decay=2,posterior+prior_beta=-1", "--png", ""])
    err = capsys.readouterr().err
    assert "depo.filter.selector.hybrid.decay: must be in (0.0, 1.0], got 2" in err


def test_text_prior_rows_feed_the_hybrid_the_text_oracle_not_an_estimator(sim, capsys):
    # Two prompts the text oracle puts at 0.5 and 0.99: with no outcomes yet, the hybrid decides by
    # its prior's mean, the prediction itself, so only the first is in the window.
    _, pool, policy = tiny_world(sim, [0.5, 0.99])
    settings = sim.SimSettings(steps=2, batch=2, warmup=1, pool_size=2)
    row = sim.build_selector("hybrid+prior_weight=4@text", pool, policy, settings, backbone_dir="unused")
    assert row.estimator is None and row.warmup == 0 and not row.uses_estimator
    assert row.selector.config.prior_weight == 4.0
    decisions = row.selector.decide(["0", "1"], row.text_oracle(np.array([0, 1]), 1))
    assert list(decisions.keep) == [True, False]
    assert decisions.score == pytest.approx([0.5, 0.99])
    choice = row.choose(step=1)
    # every scanned prompt was scored by the text oracle (the stream cycles the two-prompt pool)
    assert set(choice.scanned_predictions.round(2)) == {0.5, 0.99} and list(choice.ids) == [0, 0]
    assert sim.is_module_selector("hybrid@text")
    with pytest.raises(SystemExit):
        sim.main(["--selectors", "uniform,greso@text", "--png", ""])
    assert "greso@text" in capsys.readouterr().err


def test_combined_tables_add_the_text_prior_column_only_where_it_ran(sim):
    s = {
        "uniform": {"useful_per_rollout": 0.05},
        "hybrid": {"useful_per_rollout": 0.10},
        "oracle_history": {"useful_per_rollout": 0.12},
    }
    sim.add_gains(s)
    assert "hybrid@text" not in sim.combined_tables([("easy", 3.0, s)])
    with_text = {**s, "hybrid@text": {"useful_per_rollout": 0.115}}
    sim.add_gains(with_text)
    text = sim.combined_tables([("easy", 3.0, with_text), ("even", 3.0, s)])
    # hybrid@text gains 2.3x of the oracle's 2.4x: (2.3 - 1) / (2.4 - 1) = 93%; the run without it shows "-"
    assert text.count("hybrid@text") == 2
    assert "|  2.00x |       2.30x |" in text and "|    71% |         93% |" in text
    assert "|  2.00x |           - |" in text and "|    71% |           - |" in text
