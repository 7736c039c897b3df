"""Shared pieces of the trainer tests (conftest.py exposes ``depo_env``): a small arithmetic parquet
in verl's RL schema, a tiny local encoder, and the depo_trainer config composed over them."""

import copy
import os
import random

import pandas as pd
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import recipe.depo

CONFIG_DIR = os.path.join(os.path.dirname(recipe.depo.__file__), "config")
BATCH = 4


def problems(n, seed=0):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        terms = [str(rng.randint(1, 10 ** rng.randint(1, 4))) for _ in range(rng.randint(2, 5))]
        question = " + ".join(terms)
        rows.append(
            {
                "data_source": "arithmetic",
                "prompt": [
                    {"role": "system", "content": "Put the answer in \\boxed{}."},
                    {"role": "user", "content": f"What is {question}?"},
                ],
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": str(sum(map(int, terms)))},
                "extra_info": {"index": i, "question": question},
            }
        )
    return pd.DataFrame(rows)


def make_depo_env(tmp_path_factory):
    from recipe.depo.estimator import build_tiny_encoder

    root = tmp_path_factory.mktemp("depo_trainer")
    encoder = build_tiny_encoder(str(root / "encoder"), hidden_size=32, num_layers=1, num_heads=2, dropout=0.0)
    problems(96).to_parquet(root / "train.parquet")
    problems(8, seed=1).to_parquet(root / "val.parquet")
    with initialize_config_dir(CONFIG_DIR, version_base=None):
        base = compose(
            "depo_trainer",
            overrides=[
                f"data.train_files={root / 'train.parquet'}",
                f"data.val_files={root / 'val.parquet'}",
                f"data.train_batch_size={BATCH}",
                "data.gen_batch_size=3",
                "data.filter_overlong_prompts=false",
                "data.dataloader_num_workers=0",
                "actor_rollout_ref.rollout.n=2",
                "actor_rollout_ref.actor.ppo_mini_batch_size=2",
                "reward.custom_reward_function.path=pkg://recipe.depo.reward",
                f"trainer.default_local_dir={root / 'ckpt'}",
                f"depo.estimator.backbone={encoder}",
                "depo.estimator.placement=cpu",
                "depo.estimator.hidden_dims=[16]",
                "depo.estimator.dropout=0.0",
                "depo.estimator.max_length=32",
                "depo.estimator.micro_batch_size=4",
                "depo.filter.warmup_steps=1",
            ],
        )
    return {"root": root, "base": base, "encoder": encoder}


def config_with(env, **values):
    """The base config with keys set (``__`` stands for ``.``)."""
    cfg = copy.deepcopy(env["base"])
    for key, value in values.items():
        OmegaConf.update(cfg, key.replace("__", "."), value, force_add=True)
    return cfg


def with_dataloader(trainer, env):
    """verl's own dataset and dataloader on ``trainer`` (no workers, no Ray)."""
    from transformers import AutoTokenizer

    trainer.tokenizer = AutoTokenizer.from_pretrained(env["encoder"])
    trainer.processor = None
    trainer._init_dataloader()
    trainer.global_steps = 1
    return trainer


def dataset_questions(env):
    """What the estimator reads by default (text_source=auto): the bare problem in extra_info."""
    return [e["question"] for e in pd.read_parquet(env["root"] / "train.parquet")["extra_info"]]
