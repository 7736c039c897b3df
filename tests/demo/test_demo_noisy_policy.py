"""The learning demo's warm start: near-miss targets at the tier's rate, a cache key over the recipe,
and (slow) a built policy that can compute the easy answers but samples them unreliably."""

import json
import random
from collections import Counter

import pytest

from recipe.depo.demo import noisy_policy
from recipe.depo.demo.noisy_policy import NEAR_MISS, NOISE, NoisyPolicySpec


def test_noisy_targets_are_near_misses_at_the_tiers_rate():
    rng = random.Random(0)
    for tier, rate in enumerate(NOISE):
        offsets = Counter(noisy_policy.noisy_target(rng, tier, 100, NOISE) - 100 for _ in range(4000))
        wrong = sum(c for off, c in offsets.items() if off != 0) / 4000
        assert abs(wrong - rate) < 0.04, (tier, wrong, rate)
        assert set(offsets) - {0} <= set(NEAR_MISS) and 0 not in NEAR_MISS


def test_cache_key_covers_the_recipe_and_the_base():
    base = NoisyPolicySpec()
    assert base.digest() == NoisyPolicySpec().digest()
    assert base.digest() != NoisyPolicySpec(noise=(0.1,) * 6).digest()
    assert base.digest() != NoisyPolicySpec(steps=base.steps + 1).digest()
    assert base.digest() != NoisyPolicySpec(base=noisy_policy.TinyPolicySpec(seed=1)).digest()
    assert noisy_policy.policy_dir(base, "/x").name == f"noisy-policy-{base.digest()}"


def test_a_cache_root_that_is_a_file_is_one_line(tmp_path, capsys):
    root = tmp_path / "cache"
    root.write_text("not a directory")
    assert noisy_policy.main(["--cache-dir", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--cache-dir" in err[0] and "not a directory" in err[0]
    assert root.read_text() == "not a directory"


@pytest.mark.slow
def test_built_policy_has_the_skill_but_samples_it_unreliably():
    path = noisy_policy.ensure_noisy_policy()
    info = json.loads((path / "depo_noisy_policy.json").read_text())
    tiers = {int(k): v for k, v in info["tier_accuracy"].items()}
    # the easy tiers are computed (greedy) but sampled answers miss often: room for RL to sharpen
    assert tiers[0]["greedy"] >= 0.85 and tiers[0]["sampled"] <= tiers[0]["greedy"] - 0.3, tiers
    assert tiers[1]["greedy"] >= 0.6 and tiers[1]["sampled"] <= tiers[1]["greedy"] - 0.3, tiers
    # the top tier stays beyond it: the prompts an estimator should learn to skip
    assert tiers[5]["greedy"] <= 0.05 and tiers[5]["sampled"] <= 0.05, tiers
