"""The ``hf`` rollout server: sampled token ids with log-probs, request batching, weight updates.

The server class is exercised in-process (it is a plain class that Ray wraps as an actor); the
end-to-end test checks the same paths inside verl's trainer, where verl itself compares the
server's log-probs with the actor's recomputed ones.
"""

import asyncio

import pytest
import torch

from recipe.depo.cpu.hf_rollout import HFRolloutServer, HFServerAdapter, sampling_key
from recipe.depo.demo.tiny_policy import TinyPolicySpec, build_model, build_tokenizer, chat_prompt_ids


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    # Untrained weights are enough here: the checks are about plumbing, not answers.
    path = tmp_path_factory.mktemp("hf_rollout_model")
    tokenizer = build_tokenizer()
    model = build_model(TinyPolicySpec(num_layers=2, hidden_size=64, intermediate_size=128), tokenizer)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    model.generation_config.save_pretrained(path)
    return path


@pytest.fixture()
def server(model_dir):
    torch.manual_seed(0)
    return HFRolloutServer({"response_length": 10, "prompt_length": 32, "max_num_seqs": 64}, {"path": str(model_dir)})


def _prompts(n):
    tokenizer = build_tokenizer()
    return [chat_prompt_ids(tokenizer, f"{i}+{i + 1}=?") for i in range(n)]


def _recomputed_logprobs(model, prompt, response, temperature):
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1] / temperature
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(response)[:, None]).squeeze(-1)


def test_generate_returns_tokens_and_matching_logprobs(server):
    async def run():
        prompts = _prompts(6)
        params = {"temperature": 0.7, "top_p": 1.0, "top_k": -1, "logprobs": True}
        outs = await asyncio.gather(
            *[server.generate(f"r{i}", prompt_ids=p, sampling_params=params) for i, p in enumerate(prompts)]
        )
        return prompts, outs

    prompts, outs = asyncio.run(run())
    assert server.served_batches == 1, "concurrent requests were not batched together"
    for prompt, out in zip(prompts, outs):
        assert 1 <= len(out.token_ids) <= 10
        assert len(out.log_probs) == len(out.token_ids)
        expected = _recomputed_logprobs(server.model, prompt, out.token_ids, 0.7)
        torch.testing.assert_close(torch.tensor(out.log_probs), expected, atol=1e-4, rtol=1e-4)
        if len(out.token_ids) < 10:
            assert out.token_ids[-1] in server.eos_token_ids  # stopped on EOS, kept like vLLM does


def test_greedy_is_deterministic_and_max_tokens_is_respected(server):
    async def run():
        p = _prompts(1)[0]
        greedy = {"temperature": 0, "top_k": -1, "top_p": 1.0}
        a = await server.generate("a", prompt_ids=p, sampling_params=greedy)
        b = await server.generate("b", prompt_ids=p, sampling_params=greedy)
        short = await server.generate("c", prompt_ids=p, sampling_params={**greedy, "max_tokens": 3})
        return a, b, short

    a, b, short = asyncio.run(run())
    assert a.token_ids == b.token_ids and a.log_probs is None
    assert len(short.token_ids) <= 3 and short.token_ids == a.token_ids[: len(short.token_ids)]


def _serve(server, prompts, params, steps=(None,), together=True):
    """Ask ``server`` for ``prompts`` at each of ``steps`` in turn (one event loop, as in its Ray
    actor), all at once (one batch) or one at a time; the answers of the last step."""

    async def ask(step):
        if step is not None:
            await server.set_global_steps(step)
        if together:
            return await asyncio.gather(
                *[server.generate(f"r{i}", prompt_ids=p, sampling_params=params) for i, p in enumerate(prompts)]
            )
        return [await server.generate(f"r{i}", prompt_ids=p, sampling_params=params) for i, p in enumerate(prompts)]

    async def run():
        for step in steps:
            outs = await ask(step)
        return outs

    return [tuple(out.token_ids) for out in asyncio.run(run())]


def _fresh(model_dir, seed):
    config = {"response_length": 10, "prompt_length": 32, "max_num_seqs": 64, "seed": seed}
    return HFRolloutServer(config, {"path": str(model_dir)})


def test_a_seed_fixes_the_draws_whatever_the_batching(model_dir):
    """Same seed, step and requests: the same answers, served in one batch or one by one in another
    order; the n copies of a prompt draw differently; another seed or another step draws anew."""
    prompts = _prompts(3)
    group = [prompts[0]] * 4 + prompts[1:]
    params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1}
    torch.manual_seed(1)
    batched = _serve(_fresh(model_dir, 7), group, params, steps=[3])
    torch.manual_seed(2)  # the global generator plays no part
    one_by_one = _serve(_fresh(model_dir, 7), group[::-1], params, steps=[3], together=False)[::-1]
    # (which copy of a prompt arrives first decides which draw it gets: the group is the same)
    assert sorted(batched[:4]) == sorted(one_by_one[:4]) and batched[4:] == one_by_one[4:]
    assert len(set(batched[:4])) > 1, "the copies of one prompt drew the same answer"
    assert _serve(_fresh(model_dir, 8), group, params, steps=[3]) != batched
    assert _serve(_fresh(model_dir, 7), group, params, steps=[4]) != batched
    # counts restart with the step: asking again at step 3 after step 4 repeats step 3's draws
    assert _serve(_fresh(model_dir, 7), group, params, steps=[3, 4, 3]) == batched


def test_sampling_key_caps_by_response_length_and_context():
    key = sampling_key({"max_tokens": 99, "temperature": 1.0}, default_max_tokens=10, prompt_len=30, max_model_len=35)
    assert key.max_tokens == 5


class _FakeHandle:
    """Stands in for the Ray actor handle: ``handle.method.remote(...)`` awaits the real server."""

    def __init__(self, server):
        self._server = server

    def __getattr__(self, name):
        method = getattr(self._server, name)

        class _Remote:
            @staticmethod
            def remote(*args, **kwargs):
                return method(*args, **kwargs)

        return _Remote


def test_weight_update_through_adapter_reaches_the_server(server, model_dir, monkeypatch):
    from verl.workers.config import RolloutConfig

    monkeypatch.setenv("RANK", "0")
    adapter = HFServerAdapter.__new__(HFServerAdapter)
    adapter.config = RolloutConfig(name="hf", tensor_model_parallel_size=1)
    adapter.replica_rank, adapter.rollout_rank, adapter.is_leader = 0, 0, True
    adapter._server = _FakeHandle(server)

    new_state = {k: torch.randn_like(v) for k, v in server.model.state_dict().items() if k != "lm_head.weight"}
    prompt = _prompts(1)[0]
    greedy = {"temperature": 0, "top_k": -1, "top_p": 1.0}

    async def run():
        before = await server.generate("x", prompt_ids=prompt, sampling_params=greedy)
        await adapter.update_weights(iter(new_state.items()), global_steps=7)
        after = await server.generate("y", prompt_ids=prompt, sampling_params=greedy)
        return before, after

    before, after = asyncio.run(run())
    for name, tensor in new_state.items():
        torch.testing.assert_close(server.model.state_dict()[name], tensor)
    state = server.get_state()
    assert state["weight_version"] == 1 and state["global_steps"] == 7
    assert after.extra_fields["global_steps"] == 7
    assert before.token_ids != after.token_ids or before.extra_fields != after.extra_fields


def test_unknown_weight_names_are_rejected(server):
    with pytest.raises(KeyError, match="not_a_param"):
        asyncio.run(server.update_weights([("not_a_param", torch.zeros(1))]))


def test_non_leader_ranks_drain_the_generator_without_sending(server):
    adapter = HFServerAdapter.__new__(HFServerAdapter)
    adapter.is_leader = False
    adapter._server = None  # any send would fail
    drained = []

    def weights():
        for name, tensor in server.model.state_dict().items():
            drained.append(name)
            yield name, tensor

    asyncio.run(adapter.update_weights(weights()))
    assert len(drained) == len(server.model.state_dict())
