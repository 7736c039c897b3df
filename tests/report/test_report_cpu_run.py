"""The report on metrics recorded from a real CPU compare run (GRPO, DAPO with verl's dynamic
sampling, DEPO; see fixtures/cpu_compare/README.md). The numbers are recomputed here from the raw
lines by direct sums, independently of the report's code paths."""

import json
from pathlib import Path

import pytest

from recipe.depo.report import cli

FIXTURES = Path(__file__).parent / "fixtures" / "cpu_compare"
BATCH, N, STEPS = 16, 4, 10


def _records(run):
    return [json.loads(x) for x in (FIXTURES / run / "metrics.jsonl").read_text().splitlines()]


def _train(run):
    return [r["data"] for r in _records(run) if "training/global_step" in r["data"]]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    built, text = cli.build({m.upper(): FIXTURES / m for m in ("grpo", "dapo", "depo")}, out)
    return built["runs"], text


def test_steps_accuracy_and_time(report):
    runs, text = report
    for name, run in runs.items():
        raw = _records(name.lower())
        assert run["steps"] == STEPS
        last_val = [r for r in raw if "val-core/arithmetic/acc/mean@1" in r["data"]][-1]
        assert last_val["step"] == STEPS
        assert run["val"]["arithmetic"] == pytest.approx(100 * last_val["data"]["val-core/arithmetic/acc/mean@1"])
        assert run["gpus"] == 1 and run["device"] == "cpu"
        total = sum(d["timing_s/step"] for d in _train(name.lower()))
        assert run["gpu_hours"] == pytest.approx(total / 3600)
    depo = _train("depo")
    warm = [d["timing_s/step"] for d in depo if d["depo/warmup_active"] == 1.0]
    assert len(warm) == 3 and runs["DEPO"]["seconds_per_step_warmup"]["total"] == pytest.approx(sum(warm) / 3)
    assert runs["DEPO"]["steps_averaged"] == 7
    assert "| phase (s/step) | GRPO | DAPO | DEPO warm-up | DEPO filtered |" in text


def test_rollout_accounting(report):
    runs, _ = report
    assert runs["GRPO"]["prompts_rolled_out"] == STEPS * BATCH and runs["GRPO"]["rollouts"] == STEPS * BATCH * N

    dapo = _train("dapo")
    evicted = sum(d.get("training/filter_groups/evicted_samples", 0) for d in dapo)
    surplus = sum(d.get("training/filter_groups/discarded_surplus_samples", 0) for d in dapo)
    assert evicted > 0  # dynamic sampling did throw groups away on this task
    assert runs["DAPO"]["dapo_zero_signal_groups"] == evicted and runs["DAPO"]["dapo_surplus_groups"] == surplus
    assert runs["DAPO"]["rollouts"] == (STEPS * BATCH + evicted + surplus) * N
    # what DAPO trained on has reward variance in every group: all trained groups are useful
    assert runs["DAPO"]["useful_groups"] == STEPS * BATCH

    depo = _train("depo")
    assert runs["DEPO"]["prompts_scanned"] == sum(d["depo/prompts_scanned"] for d in depo)
    assert runs["DEPO"]["prompts_rejected"] == depo[-1]["depo/rollouts_saved"] / N
    useful = sum(BATCH * (1 - d["depo/zero_adv_group_frac"]) for d in depo)
    assert runs["DEPO"]["useful_groups"] == round(useful)
    assert runs["DEPO"]["rollouts_per_useful_group"] == pytest.approx(STEPS * BATCH * N / useful)


def test_zero_advantage_share_from_verl_rollout_dumps(report):
    """GRPO ran through verl's main_ppo (no depo/* metrics): its share comes from the rollout dumps."""
    runs, _ = report
    flat = 0
    for step in range(1, STEPS + 1):
        groups = {}
        for line in (FIXTURES / "grpo" / "rollouts" / f"{step}.jsonl").read_text().splitlines():
            row = json.loads(line)
            groups.setdefault(row["uid"].rsplit("_", 2)[0], set()).add(row["score"])
        assert len(groups) == BATCH
        flat += sum(len(scores) == 1 for scores in groups.values())
    assert runs["GRPO"]["zero_adv_share"] == pytest.approx(flat / (STEPS * BATCH))
    assert runs["GRPO"]["useful_groups"] == STEPS * BATCH - flat
