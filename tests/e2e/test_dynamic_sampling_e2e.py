"""DEPO on top of verl's dynamic sampling (`algorithm.filter_groups.enable=true`) end to end on CPU:
`python -m recipe.depo.main_depo` through the CPU demo launcher, 3 steps (step 1 warm-up), in verl's
sync trainer and in its `colocate_async` trainer (`TRAINER_MODE`).

Checked per step: every group verl's replay buffer evicted (`training/filter_groups/evicted_samples`)
or discarded beyond the batch (`.../discarded_surplus_samples`) was labelled for DEPO
(`depo/dynsamp/*`), without log-probs (the actor never computed them); the estimator learnt once
from all of them with the trained batch; and every prompt DEPO's intake sent to rollout that step
(the admissions log) was labelled exactly once, trained or not.

In the async trainer the per-step match of admissions and labels becomes a whole-run one (below).

Slow (about 2.5 minutes per trainer mode on a 2-core machine; the async one 150 s) and not in
.ci/run: its fast counterpart in the default suite is tests/trainer/test_depo_trainer.py's
dynamic-sampling test (verl's own replay buffer on real TransferQueue, without model workers),
with test_depo_e2e.py for the trainer launched for real.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "examples" / "run_depo_cpu.sh"
BATCH, N, STEPS = 8, 4, 3
ROLLED = ("warmup", "window", "explore", "fill", "guard")


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("trainer_mode", ["sync", "colocate_async"])
def test_depo_with_dynamic_sampling_labels_every_group_verl_drops(tmp_path, trainer_mode):
    from recipe.depo.estimator import build_tiny_encoder

    encoder = build_tiny_encoder(str(tmp_path / "encoder"), hidden_size=32, num_layers=1, num_heads=2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_")}
    env.update(
        POLICY="tiny",
        OUT_DIR=str(tmp_path),
        TRAIN_SIZE="160",
        VAL_SIZE="12",
        BATCH=str(BATCH),
        N=str(N),
        STEPS=str(STEPS),
        SAVE_FREQ="-1",
        TEST_FREQ="-1",
        WARMUP="1",
        REPORT="0",
        TIMEOUT_S="480",
        EXPERIMENT="dynsamp_e2e",
        TRAINER_MODE=trainer_mode,
    )
    log = tmp_path / "admissions.jsonl"
    overrides = [
        "trainer.val_before_train=false",
        f"depo.estimator.backbone={encoder}",
        "depo.estimator.max_length=32",
        "depo.estimator.hidden_dims=[16]",
        f"depo.admissions_log={log}",
        "algorithm.filter_groups.enable=true",
        "algorithm.filter_groups.metric=acc",
    ]
    proc = subprocess.run(["bash", str(LAUNCHER), *overrides], env=env, capture_output=True, text=True, timeout=600)
    (tmp_path / "run.log").write_text(proc.stdout + "\n---- stderr ----\n" + proc.stderr)
    assert proc.returncode == 0, f"see {tmp_path / 'run.log'}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines() if x.strip()]
    steps = {r["step"]: r["data"] for r in records if "training/global_step" in r["data"]}
    assert sorted(steps) == list(range(1, STEPS + 1))
    admissions = [json.loads(x) for x in log.read_text().splitlines()]
    for step, m in steps.items():
        evicted = m.get("training/filter_groups/evicted_samples", 0)
        surplus = m.get("training/filter_groups/discarded_surplus_samples", 0)
        assert m["depo/dynsamp/evicted_labelled"] == evicted, step
        assert m["depo/dynsamp/surplus_labelled"] == surplus, step
        assert m["depo/dynsamp/labelled"] == BATCH + evicted + surplus, step
        assert m["depo/labels_without_logprob"] == evicted + surplus, step  # old_log_probs: trained batch only
        assert m["depo/estimator/num_updates"] == step and m["depo/estimator/skipped"] == 0
        if trainer_mode == "sync":
            rolled = sum(x["step"] == step and x["decision"] in ROLLED for x in admissions)
            assert rolled == m["depo/dynsamp/labelled"], (step, rolled)  # every rolled-out prompt, once
    if trainer_mode != "sync":
        # verl's async trainer generates a batch ahead (the launcher's one warm-up batch), so a
        # step's labels come from prompts admitted at earlier steps: over the run, every label is a
        # prompt DEPO sent to rollout, and what was sent but not labelled is the batch still in
        # flight at the end, refills included (measured: 76 sent, 68 labelled)
        rolled = sum(x["decision"] in ROLLED for x in admissions)
        labelled = sum(m["depo/dynsamp/labelled"] for m in steps.values())
        assert labelled <= rolled, (labelled, rolled)
        assert rolled - labelled <= BATCH * max(m["depo/generation_rounds"] for m in steps.values()), (rolled, labelled)
    # the tiny policy answers many arithmetic prompts all right or all wrong: verl did evict
    assert sum(m.get("training/filter_groups/evicted_samples", 0) for m in steps.values()) > 0
