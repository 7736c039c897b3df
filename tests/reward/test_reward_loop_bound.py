"""The reward's time bound holds inside verl 0.9.1's own reward loop, not only when called directly.

verl's RewardLoopManager starts RewardLoopWorker Ray actors; each decodes responses and awaits
``compute_score`` through ``loop.run_in_executor`` (an executor thread, so no signal-based
timeout can work there). Before the bound, one of the answers below held a scoring thread for
minutes and the whole batch with it. Nothing is mocked: real Ray actor, real tokenizer, verl's
NaiveRewardManager, our compute_score, its math-verify children.
"""

import os
import time

import numpy as np
import pytest
import ray
import torch
from hydra import compose, initialize_config_dir

import recipe.depo
from recipe.depo.demo.tiny_policy import build_tokenizer
from recipe.depo.verify_pool import DEFAULT_TIMEOUT_S, STALLING_ANSWERS

pytestmark = pytest.mark.ray

CONFIG_DIR = os.path.join(os.path.dirname(recipe.depo.__file__), "config")

# six of them keep the test to a few deadlines
ADVERSARIAL = [f"\\boxed{{{answer}}}" for answer in STALLING_ANSWERS[:6]]
ORDINARY = [
    ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{1}{\\sqrt{2}}", 1.0),
    ("\\boxed{0.5}", "\\frac12", 1.0),
    ("\\boxed{1000000008}", "1000000007", 0.0),
    ("no box", "3", 0.0),
]


def _batch(tokenizer, items):
    """A verl DataProto as the agent loop hands it to the reward loop: left-padded prompts,
    right-padded responses, one attention mask over both."""
    from verl import DataProto

    prompt = tokenizer.encode("Q?", add_special_tokens=False)
    responses = [tokenizer.encode(text, add_special_tokens=False) for text, _, _ in items]
    width = max(len(r) for r in responses)
    pad = tokenizer.pad_token_id
    response_ids = torch.full((len(items), width), pad, dtype=torch.long)
    response_mask = torch.zeros((len(items), width), dtype=torch.long)
    for i, ids in enumerate(responses):
        response_ids[i, : len(ids)] = torch.tensor(ids)
        response_mask[i, : len(ids)] = 1
    prompts = torch.tensor([prompt] * len(items))
    return DataProto.from_dict(
        tensors={
            "prompts": prompts,
            "responses": response_ids,
            "attention_mask": torch.cat([torch.ones_like(prompts), response_mask], dim=1),
        },
        non_tensors={
            "data_source": np.array(["math500"] * len(items), dtype=object),
            "reward_model": np.array([{"style": "rule", "ground_truth": t} for _, t, _ in items], dtype=object),
            "extra_info": np.array([{"index": i, "split": "train"} for i in range(len(items))], dtype=object),
        },
    )


@pytest.fixture(scope="module")
def reward_loop(tmp_path_factory):
    from verl.experimental.reward_loop.reward_loop import RewardLoopManager

    tokenizer_dir = tmp_path_factory.mktemp("tokenizer")
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(tokenizer_dir)
    with initialize_config_dir(CONFIG_DIR, version_base=None):
        config = compose(
            "depo_trainer",
            overrides=[
                f"actor_rollout_ref.model.path={tokenizer_dir}",
                "reward.custom_reward_function.path=pkg://recipe.depo.reward",
                "reward.num_workers=1",
            ],
        )
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    try:
        manager = RewardLoopManager(config)
        yield manager, tokenizer
    finally:
        ray.shutdown()


def test_adversarial_answers_do_not_stall_verls_reward_loop(reward_loop):
    manager, tokenizer = reward_loop
    items = [(text, "5", 0.0) for text in ADVERSARIAL] + ORDINARY
    manager.compute_rm_score(_batch(tokenizer, ORDINARY))  # start-up: actor, imports, math-verify children

    start = time.perf_counter()
    out = manager.compute_rm_score(_batch(tokenizer, items))
    seconds = time.perf_counter() - start

    assert list(out.non_tensor_batch["acc"]) == [acc for _, _, acc in items]
    verdicts = list(out.non_tensor_batch["verdict"])
    assert set(verdicts[: len(ADVERSARIAL)]) <= {"timeout", "memory", "wrong"}, verdicts
    assert verdicts.count("timeout") >= 3, verdicts  # the bound was what stopped them
    # rm_scores carry the score on each response's last token
    assert out.batch["rm_scores"].sum(dim=1).tolist() == [acc for _, _, acc in items]
    # two math-verify children per worker: six adversarial pairs run in three rounds of the
    # deadline, plus a kill and a restart each (generous slack: the machine is shared)
    rounds = -(-len(ADVERSARIAL) // 2)
    assert seconds < rounds * (DEFAULT_TIMEOUT_S + 2.0), seconds
