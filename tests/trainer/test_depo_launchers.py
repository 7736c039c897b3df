"""The GPU launchers (one per Table 1 row): valid bash, and their overrides compose into a config
that both verl's and DEPO's validation accept, with each row's distinguishing settings."""

import os
import stat
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import recipe.depo
from recipe.depo.validation import validate

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
CONFIG_DIR = os.path.join(os.path.dirname(recipe.depo.__file__), "config")
GPU_LAUNCHERS = sorted(
    p.name
    for p in EXAMPLES.glob("run_*.sh")
    if p.name.split("_")[1] in ("grpo", "dapo", "depo") and "cpu" not in p.name
)

# launcher -> settings that make it that row
ROWS = {
    "run_depo_qwen7b.sh": {
        "depo.enable": True,
        "depo.filter.enable": True,
        "algorithm.adv_estimator": "grpo_depo",
        "actor_rollout_ref.model.path": "Qwen/Qwen2.5-7B-Instruct",
    },
    "run_grpo_qwen7b.sh": {"depo.enable": False, "algorithm.adv_estimator": "grpo"},
    "run_depo_qwen7b_or1.sh": {"depo.enable": True, "data.train_files": "/data/or1_math.parquet"},
    "run_grpo_qwen7b_or1.sh": {"depo.enable": False, "data.train_files": "/data/or1_math.parquet"},
    "run_depo_qwen7b_nt.sh": {"depo.enable": True, "data.train_files": "/data/nt.parquet"},
    "run_grpo_qwen7b_nt.sh": {"depo.enable": False, "data.train_files": "/data/nt.parquet"},
    "run_depo_qwen1.5b.sh": {
        "depo.enable": True,
        "actor_rollout_ref.model.path": "Qwen/Qwen2.5-1.5B-Instruct",
        "actor_rollout_ref.rollout.tensor_model_parallel_size": 1,
    },
    "run_grpo_qwen1.5b.sh": {"depo.enable": False, "algorithm.filter_groups.enable": False},
    "run_dapo_qwen1.5b.sh": {
        "depo.enable": False,
        "algorithm.filter_groups.enable": True,
        "algorithm.filter_groups.metric": "acc",
    },
    "run_grpo_polaris_qwen1.5b.sh": {"depo.enable": False, "data.train_files": "/data/dapo_polaris.parquet"},
    "run_depo_qwen1.5b_no_ranking.sh": {
        "depo.enable": True,
        "depo.estimator.w_ranking": 0.0,
        "depo.estimator.w_distill": 0.5,
    },
    "run_depo_qwen1.5b_no_distill.sh": {
        "depo.enable": True,
        "depo.estimator.w_distill": 0.0,
        "depo.estimator.w_ranking": 3.0,
    },
    "run_depo_dapo_qwen1.5b.sh": {
        "depo.enable": True,
        "depo.advantage_filter.mask_zero_adv_groups": True,
        "algorithm.filter_groups.enable": False,
    },
    "run_grpo_mask_qwen1.5b.sh": {
        "depo.enable": True,
        "depo.filter.enable": False,
        "depo.advantage_filter.mask_zero_adv_groups": True,
    },
}
# the authors' 7B launcher (docs/depo.md), shared by every row
PAPER = {
    "data.train_batch_size": 128,
    "actor_rollout_ref.rollout.n": 8,
    "actor_rollout_ref.actor.ppo_mini_batch_size": 64,
    "data.max_prompt_length": 2048,
    "data.max_response_length": 10240,
    "actor_rollout_ref.actor.optim.lr": 1e-6,
    "actor_rollout_ref.actor.optim.lr_warmup_steps": 10,
    "actor_rollout_ref.actor.optim.weight_decay": 0.1,
    "actor_rollout_ref.actor.loss_agg_mode": "token-mean",
    "actor_rollout_ref.actor.use_kl_loss": False,
    "algorithm.use_kl_in_reward": False,
    "actor_rollout_ref.actor.clip_ratio_low": 0.2,
    "actor_rollout_ref.actor.clip_ratio_high": 0.28,
    "reward.reward_kwargs.overlong_buffer_cfg.len": 4096,
    "reward.reward_kwargs.overlong_buffer_cfg.penalty_factor": 1.0,
    "actor_rollout_ref.rollout.temperature": 1.0,
    "actor_rollout_ref.rollout.name": "vllm",
    "trainer.nnodes": 2,
    "trainer.n_gpus_per_node": 8,
    "depo.filter.warmup_steps": 100,
    "depo.filter.window": [0.15, 0.85],
    "depo.estimator.backbone": "distilbert-base-uncased",
    "depo.estimator.lr": 2e-4,
    # The paper's estimator, not depo_trainer.yaml's measured defaults: launchers reproduce Table 1.
    "depo.estimator.updates_per_step": 1,
    "depo.estimator.replay_steps": 1,
    "depo.estimator.calibration": "none",
    "reward.custom_reward_function.path": "pkg://recipe.depo.reward",
}


def test_every_row_has_a_launcher():
    assert set(GPU_LAUNCHERS) == set(ROWS)


@pytest.mark.parametrize("name", GPU_LAUNCHERS)
def test_launcher_is_valid_bash_and_executable(name):
    path = EXAMPLES / name
    subprocess.run(["bash", "-n", str(path)], check=True)
    assert path.stat().st_mode & stat.S_IXUSR


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    """A stand-in `python` that records its argv instead of training."""
    root = tmp_path_factory.mktemp("launch")
    fake = root / "fake_python"
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$CAPTURE_FILE"\n')
    fake.chmod(0o755)

    def run(name):
        out = root / f"{name}.args"
        env = {k: v for k, v in os.environ.items() if k not in ROWS_ENV_KNOBS}
        env.update(PYTHON=str(fake), CAPTURE_FILE=str(out), DATA_DIR="/data")
        subprocess.run(
            ["bash", str(EXAMPLES / name), "trainer.total_training_steps=3"], env=env, check=True, cwd=root, timeout=60
        )
        args = out.read_text().splitlines()
        assert args[:2] == ["-m", "recipe.depo.main_depo"]
        return args[2:]

    return run


# knobs a developer may have exported; they must not leak into the test
ROWS_ENV_KNOBS = {
    "MODEL",
    "TRAIN_FILE",
    "DEPO",
    "ADV_ESTIMATOR",
    "FILTER",
    "MASK_ZERO_ADV",
    "DYNAMIC_SAMPLING",
    "W_DISTILL",
    "W_RANKING",
    "TP",
    "EXPERIMENT",
    "EVAL_DIR",
    "VAL_FILES",
    "CKPT_DIR",
}


def _select(cfg, key):
    from omegaconf import DictConfig, ListConfig, OmegaConf

    value = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value


@pytest.mark.parametrize("name", GPU_LAUNCHERS)
def test_launcher_overrides_compose_and_validate(name, capture):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    overrides = capture(name)
    assert overrides[-1] == "trainer.total_training_steps=3"  # extra args pass through
    with initialize_config_dir(CONFIG_DIR, version_base=None):
        cfg = compose("depo_trainer", overrides=overrides)
    for key, expected in {**PAPER, **ROWS[name]}.items():
        assert _select(cfg, key) == expected, f"{name}: {key}={_select(cfg, key)!r}, expected {expected!r}"
    assert _select(cfg, "data.val_files") == [
        f"/data/eval/{s}.parquet" for s in ("gsm8k", "math500", "amc23", "olympiadbench", "minerva")
    ]
    validate(cfg)
    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
