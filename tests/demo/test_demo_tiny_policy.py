"""The tiny warm-started policy: local tokenizer, deterministic cache, and the difficulty spread
the demo relies on (easiest tier mostly solved, hardest tier rarely)."""

import json

import pytest

from recipe.depo.demo import tiny_policy
from recipe.depo.demo.tiny_policy import TinyPolicySpec


@pytest.fixture(scope="session")
def policy_dir():
    # The default cache is shared with the demo and the end-to-end test: built once per machine.
    return tiny_policy.ensure_tiny_policy()


def test_tokenizer_survives_a_save_and_autotokenizer_reload(tmp_path):
    from transformers import AutoTokenizer, Qwen2Config

    tokenizer = tiny_policy.build_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    Qwen2Config(vocab_size=len(tokenizer)).save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "12+7=?"
    assert tiny_policy.chat_prompt_ids(reloaded, text) == tiny_policy.chat_prompt_ids(tokenizer, text)
    assert len(reloaded.encode("\n", add_special_tokens=False)) == 1  # verl's Qwen chat handling needs this
    assert reloaded.eos_token == "<|im_end|>" and reloaded.pad_token == "<|endoftext|>"
    ids = reloaded.encode("\\boxed{-42}", add_special_tokens=False)
    assert reloaded.decode(ids) == "\\boxed{-42}"


def test_cache_key_covers_the_recipe():
    base = TinyPolicySpec()
    assert base.digest() == TinyPolicySpec().digest()
    assert base.digest() != TinyPolicySpec(seed=1).digest()
    assert base.digest() != TinyPolicySpec(steps=base.steps + 1).digest()


def test_second_call_reuses_the_cache(policy_dir):
    import time

    start = time.time()
    again = tiny_policy.ensure_tiny_policy()
    assert again == policy_dir and time.time() - start < 1.0
    info = json.loads((policy_dir / "depo_tiny_policy.json").read_text())
    assert info["spec"]["seed"] == TinyPolicySpec().seed


def test_easy_tier_mostly_solved_hardest_rarely(policy_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    accuracy = tiny_policy.tier_accuracy(model, tokenizer, per_tier=40, seed=777)
    hardest = max(accuracy)
    assert accuracy[0] >= 0.8, accuracy
    assert accuracy[hardest] <= 0.1, accuracy
    # something in between, so that GRPO groups are not all solved or all failed
    assert any(0.05 <= acc <= 0.9 for acc in accuracy.values()), accuracy


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "0"], "--steps must be at least 1, got 0"),
        (["--steps", "-5"], "--steps must be at least 1, got -5"),
        (["--cache-dir", "{file}"], "--cache-dir {file}: {file} is not a directory"),
        (["--cache-dir", "{file}/below"], "--cache-dir {file}/below: {file} is not a directory"),
    ],
)
def test_bad_arguments_are_one_line_before_any_training(tmp_path, capsys, monkeypatch, argv, message):
    file = tmp_path / "a-file"
    file.write_text("not a directory")
    monkeypatch.setattr(tiny_policy, "warm_start", lambda *a, **k: pytest.fail("trained on a bad argument"))
    with pytest.raises(SystemExit) as exit_info:
        tiny_policy.main([a.format(file=file) for a in argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and message.format(file=file) in err.strip().splitlines()[-1], err


def test_a_cache_variable_that_names_a_file_is_one_line(tmp_path, capsys, monkeypatch):
    file = tmp_path / "a-file"
    file.write_text("x")
    monkeypatch.setenv("DEPO_CPU_CACHE", str(file))
    with pytest.raises(SystemExit):
        tiny_policy.main([])
    assert f"$DEPO_CPU_CACHE {file}: {file} is not a directory" in capsys.readouterr().err


@pytest.mark.parametrize("threads", ["abc", "0", "-2", ""])
def test_a_bad_thread_count_variable_is_one_line(capsys, monkeypatch, tmp_path, threads):
    monkeypatch.setenv("DEPO_CPU_THREADS", threads)
    monkeypatch.setattr(tiny_policy, "warm_start", lambda *a, **k: pytest.fail("trained on a bad argument"))
    with pytest.raises(SystemExit):
        tiny_policy.main(["--cache-dir", str(tmp_path)])
    assert f"$DEPO_CPU_THREADS must be a positive integer, got {threads!r}" in capsys.readouterr().err


def test_the_warm_start_loop_is_deterministic_and_teaches_each_problems_target():
    """Both warm starts (tiny and noisy) run tiny_policy.answer_sft; the caches are keyed by spec,
    not code, so the loop must give the same weights for the same settings, and the target it
    teaches is asked for every generated problem in order."""
    import torch

    from recipe.depo.demo.arithmetic_task import answer_text, iter_problems

    spec = TinyPolicySpec(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)
    tokenizer = tiny_policy.build_tokenizer()
    runs = []
    for _ in range(2):
        asked = []

        def target(tier, value, asked=asked):
            asked.append((tier, value))
            return answer_text(value)

        model = tiny_policy.build_model(spec, tokenizer)
        settings = dict(seed=3, steps=3, batch_size=4, lr=1e-3, tier_weights=spec.tier_weights)
        losses = tiny_policy.answer_sft(model, tokenizer, **settings, target=target, tag="test", log_every=0)
        runs.append((losses, model.state_dict(), asked))
    (losses, weights, asked), (losses2, weights2, asked2) = runs
    assert len(losses) == 3 and all(0 < x < 20 for x in losses) and losses == losses2
    assert all(torch.equal(weights[k], weights2[k]) for k in weights)
    problems = iter_problems(seed=3 + 17, count=12, tier_weights=spec.tier_weights)
    assert asked == asked2 == [(tier, value) for tier, _, value in problems]
