"""The learning demo's warm start: bare (unboxed) and near-miss targets at their rates, a cache key
over the recipe, and (slow) a built policy that computes the easy answers but rarely boxes them."""

import json
import random
from collections import Counter

import pytest

from recipe.depo.demo import noisy_policy
from recipe.depo.demo.noisy_policy import NEAR_MISS, NoisyPolicySpec
from recipe.depo.reward import compute_score


def test_bare_targets_come_at_their_rate_and_score_zero():
    rng = random.Random(0)
    targets = [noisy_policy.target_text(rng, 42, 0.7) for _ in range(4000)]
    bare = [t for t in targets if t == "42"]
    assert abs(len(bare) / 4000 - 0.7) < 0.03
    assert set(targets) == {"42", "\\boxed{42}"}
    # what the policy learns from: the reward refuses the bare answer, accepts the boxed one
    assert compute_score("arithmetic", "42", "42")["acc"] == 0.0
    assert compute_score("arithmetic", "\\boxed{42}", "42")["acc"] == 1.0
    assert [noisy_policy.bare_value(a) for a in ("42", "\\boxed{-7}", "\\boxed{4", "4 2")] == [42, -7, None, None]


def test_noisy_targets_are_near_misses_at_the_tiers_rate():
    rng = random.Random(0)
    noise = (0.3, 0.5, 0.5, 0.5, 0.5, 0.5)  # the earlier recipe's rates (the default is now none)
    for tier, rate in enumerate(noise):
        offsets = Counter(noisy_policy.noisy_target(rng, tier, 100, noise) - 100 for _ in range(4000))
        wrong = sum(c for off, c in offsets.items() if off != 0) / 4000
        assert abs(wrong - rate) < 0.04, (tier, wrong, rate)
        assert set(offsets) - {0} <= set(NEAR_MISS) and 0 not in NEAR_MISS


def test_cache_key_covers_the_recipe_and_the_base():
    base = NoisyPolicySpec()
    assert base.digest() == NoisyPolicySpec().digest()
    assert base.digest() != NoisyPolicySpec(noise=(0.1,) * 6).digest()
    assert base.digest() != NoisyPolicySpec(steps=base.steps + 1).digest()
    assert base.digest() != NoisyPolicySpec(unboxed=0.5).digest()
    assert base.digest() != NoisyPolicySpec(base=noisy_policy.TinyPolicySpec(seed=1)).digest()
    assert base.digest() != NoisyPolicySpec(recipe="scratch").digest()
    # the default recipe keeps the cache key it had before the field existed
    assert base.digest() == "608ef11143c9"
    assert noisy_policy.policy_dir(base, "/x").name == f"noisy-policy-{base.digest()}"


def test_an_unknown_recipe_is_refused_naming_it():
    with pytest.raises(ValueError, match="recipe must be one of finetune, scratch, got 'tune'"):
        NoisyPolicySpec(recipe="tune")
    scratch = NoisyPolicySpec.scratch()
    assert (scratch.recipe, scratch.steps, scratch.lr) == ("scratch", 600, 3e-3)


def test_a_cache_root_that_is_a_file_is_one_line(tmp_path, capsys):
    root = tmp_path / "cache"
    root.write_text("not a directory")
    assert noisy_policy.main(["--cache-dir", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--cache-dir" in err[0] and "not a directory" in err[0]
    assert root.read_text() == "not a directory"


@pytest.mark.slow
def test_built_policy_computes_the_easy_answers_but_rarely_boxes_them():
    path = noisy_policy.ensure_noisy_policy()
    info = json.loads((path / "depo_noisy_policy.json").read_text())
    tiers = {int(k): v for k, v in info["tier_accuracy"].items()}
    # the easy tiers' numbers are computed but mostly left unboxed: room for RL to learn the format
    assert tiers[0]["sampled"] <= 0.25 and tiers[0]["sampled_value"] >= tiers[0]["sampled"] + 0.08, tiers
    assert tiers[1]["sampled"] <= 0.15 and tiers[1]["sampled_value"] >= tiers[1]["sampled"] + 0.08, tiers
    # the top tier stays beyond it: the prompts an estimator should learn to skip
    assert tiers[5]["greedy"] <= 0.05 and tiers[5]["sampled"] <= 0.05, tiers


def test_a_small_finetune_build_publishes_both_policies_complete(tmp_path, monkeypatch):
    """The finetune recipe builds its base first, then itself, each published whole under its
    spec's name (what a later run's cache lookup and verl's model loading read)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("DEPO_CPU_THREADS", "1")
    base = noisy_policy.TinyPolicySpec(
        hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64, steps=2, batch_size=4
    )
    spec = NoisyPolicySpec(base=base, steps=2, batch_size=4)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        path = noisy_policy.ensure_noisy_policy(spec, tmp_path, evaluate=False)
        assert torch.get_num_threads() == 2  # the builds' one thread is not left on the caller
    finally:
        torch.set_num_threads(threads)
    assert path == noisy_policy.policy_dir(spec, tmp_path)
    base_dir = tmp_path / f"tiny-policy-{base.digest()}"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, base_dir.name])  # no staging left
    for folder, info_name in ((base_dir, "depo_tiny_policy.json"), (path, "depo_noisy_policy.json")):
        info = json.loads((folder / info_name).read_text())
        assert info["parameters"] > 0 and info["final_loss"] > 0
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        assert AutoTokenizer.from_pretrained(folder).eos_token == "<|im_end|>"
        assert model.config.hidden_size == 32
    assert json.loads((path / "depo_noisy_policy.json").read_text())["base"] == str(base_dir)
    # fine-tuned away from its base
    a = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).state_dict()
    b = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert noisy_policy.ensure_noisy_policy(spec, tmp_path, evaluate=False) == path  # cached now


def test_a_small_scratch_build_needs_no_base(tmp_path, monkeypatch):
    """The default recipe trains the base's architecture from initialisation: only its own
    directory is published, and it records no base."""
    import torch
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("DEPO_CPU_THREADS", "1")
    base = noisy_policy.TinyPolicySpec(
        hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64, steps=2, batch_size=4
    )
    spec = NoisyPolicySpec.scratch(base=base, steps=3, batch_size=4)
    path = noisy_policy.ensure_noisy_policy(spec, tmp_path, evaluate=False)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    info = json.loads((path / "depo_noisy_policy.json").read_text())
    assert info["base"] is None and info["spec"]["recipe"] == "scratch" and info["final_loss"] > 0
    assert AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).config.hidden_size == 32
