"""Rollout name ``hf``: a transformers-based rollout server for verl's async generate interface.

Three pieces, matching how verl wires its vLLM/SGLang backends:

* :class:`HFRolloutServer` -- a Ray actor holding one copy of the policy. ``generate`` takes a
  request's prompt token ids and sampling params and returns ``TokenOutput(token_ids, log_probs)``.
  Concurrent requests are queued and served together as one padded batch, because the agent
  loop sends every prompt of a step at once and one batched forward is far cheaper on CPU than
  many single ones.
* :class:`HFReplica` -- the ``RolloutReplica`` the trainer's ``LLMServerManager`` builds; it
  starts one server per replica next to the replica's trainer workers.
* :class:`HFServerAdapter` -- the ``BaseRollout`` living inside each trainer worker. verl's
  ``naive`` checkpoint engine hands it the actor's current weights every step and it pushes
  them to its replica's server.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import ray
import torch
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica, TokenOutput

from recipe.depo.cpu import ROLLOUT_NAME, verl_internals
from recipe.depo.seeded_sampling import RowSeededSampler, sample_seed

logger = logging.getLogger(__name__)

SERVER_NAME_PREFIX = f"{ROLLOUT_NAME}_server_"


def server_actor_name(replica_rank: int, node_rank: int = 0, name_suffix: str = "") -> str:
    return f"{SERVER_NAME_PREFIX}{replica_rank}_{node_rank}{name_suffix}"


# verl hands its rollout and model configs as BaseConfig dataclasses (tests: plain dicts); both
# have .get(key, default).
def _model_path(model_config: Any) -> str:
    path = model_config.get("local_path") or model_config.get("path")
    if not path:
        raise ValueError("hf rollout: actor_rollout_ref.model.path is not set")
    return str(path)


@dataclass(frozen=True)
class SamplingKey:
    """Requests with equal keys can share one ``generate`` call."""

    temperature: float
    top_p: float
    top_k: int
    max_tokens: int
    logprobs: bool


@dataclass
class _Request:
    prompt_ids: list[int]
    key: SamplingKey
    future: asyncio.Future = field(repr=False)
    seed: int = 0


def sampling_key(
    sampling_params: dict[str, Any], default_max_tokens: int, prompt_len: int, max_model_len: int
) -> SamplingKey:
    params = dict(sampling_params or {})
    max_tokens = params.get("max_tokens", params.get("max_new_tokens", default_max_tokens))
    max_tokens = int(min(max_tokens, default_max_tokens, max(1, max_model_len - prompt_len)))
    top_k = params.get("top_k", -1)
    top_k = -1 if top_k is None else int(top_k)
    return SamplingKey(
        temperature=float(params.get("temperature", 1.0) or 0.0),
        top_p=float(params.get("top_p", 1.0) if params.get("top_p") is not None else 1.0),
        top_k=top_k,
        max_tokens=max(1, max_tokens),
        logprobs=bool(params.get("logprobs", False)),
    )


class HFRolloutServer:
    """One policy copy serving sampled generation; runs as a Ray actor (see :class:`HFReplica`)."""

    def __init__(
        self,
        config: Any,
        model_config: Any,
        replica_rank: int = 0,
        node_rank: int = 0,
        batch_window_s: float = 0.02,
        num_threads: int | None = None,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        if num_threads:
            torch.set_num_threads(int(num_threads))
        self.config = config
        self.replica_rank = replica_rank
        self.node_rank = node_rank
        self.batch_window_s = batch_window_s
        path = _model_path(model_config)
        override = dict(model_config.get("override_config", {}) or {})
        attn = override.get("attn_implementation", "sdpa")
        # fp32: this CPU has no fast bf16 and the trainer recomputes log-probs in fp32.
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=attn)
        self.model.eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        try:
            gen_cfg = GenerationConfig.from_pretrained(path)
        except Exception:
            gen_cfg = self.model.generation_config
        eos = gen_cfg.eos_token_id if gen_cfg.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos_token_ids = sorted({eos} if isinstance(eos, int) else set(eos or []))
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else (self.eos_token_ids[0] if self.eos_token_ids else 0)
        self.response_length = int(config.get("response_length", 512))
        self.max_model_len = int(
            config.get("max_model_len", None) or (int(config.get("prompt_length", 512)) + self.response_length)
        )
        self.max_num_seqs = int(config.get("max_num_seqs", 1024) or 1024)
        # verl's rollout.seed (vLLM's too), one stream per replica as verl's vLLM server does
        self.seed = int(config.get("seed", 42) or 0) + int(replica_rank)
        self._draws: dict[tuple, int] = {}
        self.global_steps: int | None = None
        self.weight_version = 0
        self.served_requests = 0
        self.served_batches = 0
        self._queue: list[_Request] = []
        self._wakeup: asyncio.Event | None = None
        self._batcher: asyncio.Task | None = None
        self._resume: asyncio.Event | None = None
        self._model_lock: asyncio.Lock | None = None

    # ------------------------------------------------------------------ generation
    def _ensure_loop_state(self) -> None:
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
            self._resume = asyncio.Event()
            self._resume.set()
            self._model_lock = asyncio.Lock()
        if self._batcher is None or self._batcher.done():
            self._batcher = asyncio.get_running_loop().create_task(self._batch_loop())

    async def generate(
        self,
        request_id: str = "",
        *,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        image_data: Any = None,
        video_data: Any = None,
        **kwargs: Any,
    ) -> TokenOutput:
        if image_data is not None or video_data is not None:
            raise NotImplementedError("hf rollout serves text-only prompts")
        self._ensure_loop_state()
        await self._resume.wait()
        key = sampling_key(sampling_params, self.response_length, len(prompt_ids), self.max_model_len)
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Request(list(prompt_ids), key, future, self._request_seed(prompt_ids)))
        self._wakeup.set()
        token_ids, log_probs = await future
        self.served_requests += 1
        return TokenOutput(
            token_ids=token_ids,
            log_probs=log_probs if key.logprobs else None,
            stop_reason="completed",
            extra_fields={"global_steps": self.global_steps},
        )

    def _request_seed(self, prompt_ids: list[int]) -> int:
        """The seed of this request's draw: the rollout seed, the training step, the prompt and how
        many times the prompt was asked for before in this step (the n samples of a group are n
        requests). Which prompts arrive together, and in what order, then no longer changes what
        is sampled: two runs with one seed draw the same answers from the same policy."""
        prompt = sample_seed(*prompt_ids)
        if self._draws and next(iter(self._draws))[0] != self.global_steps:
            self._draws.clear()  # a new step: earlier counts are never asked for again
        count = self._draws.get((self.global_steps, prompt), 0)
        self._draws[(self.global_steps, prompt)] = count + 1
        return sample_seed(self.seed, self.global_steps, prompt, count)

    async def _batch_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            # A short window lets the rest of a step's concurrent requests arrive.
            await asyncio.sleep(self.batch_window_s)
            self._wakeup.clear()
            pending, self._queue = self._queue, []
            groups: dict[SamplingKey, list[_Request]] = {}
            for request in pending:
                groups.setdefault(request.key, []).append(request)
            for key, requests in groups.items():
                for start in range(0, len(requests), self.max_num_seqs):
                    chunk = requests[start : start + self.max_num_seqs]
                    try:
                        async with self._model_lock:
                            results = await asyncio.to_thread(
                                self._generate_batch, [r.prompt_ids for r in chunk], key, [r.seed for r in chunk]
                            )
                    except Exception as exc:  # surface the failure on every waiting request
                        for request in chunk:
                            if not request.future.done():
                                request.future.set_exception(exc)
                        continue
                    for request, result in zip(chunk, results, strict=True):
                        if not request.future.done():
                            request.future.set_result(result)
                    self.served_batches += 1

    @torch.no_grad()
    def _generate_batch(
        self, prompts: list[list[int]], key: SamplingKey, seeds: list[int] | None = None
    ) -> list[tuple[list[int], list[float]]]:
        width = max(len(p) for p in prompts)
        # Left padding keeps every prompt's last token at the same position for decoding.
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            attention_mask[row, width - len(prompt) :] = 1
        greedy = key.temperature <= 0.0
        gen_kwargs: dict[str, Any] = dict(
            max_new_tokens=key.max_tokens,
            do_sample=False,  # sampling, when asked, is RowSeededSampler's noise before the argmax
            eos_token_id=self.eos_token_ids or None,
            pad_token_id=self.pad_token_id,
            return_dict_in_generate=True,
            output_logits=True,
            temperature=None,
            top_p=None,
            top_k=None,
        )
        if not greedy:
            from transformers import LogitsProcessorList

            if seeds is None:
                seeds = [int(torch.randint(0, 2**31 - 1, ())) for _ in prompts]
            sampler = RowSeededSampler(seeds, key.temperature, key.top_p, "cpu", top_k=key.top_k)
            gen_kwargs["logits_processor"] = LogitsProcessorList([sampler])
        out = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **gen_kwargs)
        new_tokens = out.sequences[:, width:]
        # Log-probs as the trainer recomputes them: raw logits divided by the sampling temperature,
        # before top-k/top-p truncation (verl's actor never truncates).
        logits = torch.stack(out.logits, dim=1).float()
        if not greedy:
            logits = logits / key.temperature
        token_logprobs = torch.log_softmax(logits, dim=-1).gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        eos = set(self.eos_token_ids)
        results = []
        for row in range(len(prompts)):
            ids = new_tokens[row].tolist()
            cut = len(ids)
            for pos, tok in enumerate(ids):
                if tok in eos:
                    cut = pos + 1  # keep the stop token, as vLLM does
                    break
            results.append((ids[:cut], token_logprobs[row, :cut].tolist()))
        return results

    # ------------------------------------------------------------------ weights
    async def update_weights(
        self, named_tensors: list[tuple[str, torch.Tensor]], global_steps: int | None = None
    ) -> dict:
        self._ensure_loop_state()
        async with self._model_lock:  # never swap weights under a running batch
            state = {name: tensor for name, tensor in named_tensors}
            own = self.model.state_dict()
            unknown = sorted(set(state) - set(own))
            if unknown:
                raise KeyError(f"hf rollout: trainer sent weights the server model does not have: {unknown[:5]}")
            for name, tensor in state.items():
                if own[name].shape != tensor.shape:
                    raise ValueError(
                        f"hf rollout: weight {name} has shape {tuple(tensor.shape)}, "
                        f"server expects {tuple(own[name].shape)}"
                    )
            self.model.load_state_dict(state, strict=False)
            if getattr(self.model.config, "tie_word_embeddings", False):
                self.model.tie_weights()
            self.weight_version += 1
            if global_steps is not None:
                self.global_steps = global_steps
        return {"weight_version": self.weight_version, "num_tensors": len(state)}

    def get_state(self) -> dict[str, Any]:
        return {
            "weight_version": self.weight_version,
            "global_steps": self.global_steps,
            "served_requests": self.served_requests,
            "served_batches": self.served_batches,
        }

    def get_named_parameter(self, name: str) -> torch.Tensor:
        return self.model.state_dict()[name].detach().clone()

    async def set_global_steps(self, global_steps: int) -> None:
        self.global_steps = global_steps

    # ------------------------------------------------------------------ lifecycle
    # Weights and the (per-call) KV cache live in host memory; there is nothing to free or
    # restore, so the lifecycle calls the trainer makes only gate admission of new requests.
    async def wake_up(self, tags: list[str] | None = None) -> None:
        return None

    async def sleep(self) -> None:
        return None

    async def clear_kv_cache(self) -> None:
        return None

    async def release_kv_cache(self) -> None:
        return None

    async def resume_kv_cache(self) -> None:
        return None

    async def wait_for_requests_to_drain(self) -> None:
        while self._queue:
            await asyncio.sleep(0.01)

    async def abort_all_requests(self, reject_request: bool = False) -> dict[str, Any]:
        self._ensure_loop_state()
        self._resume.clear()
        return {"aborted": 0}

    async def resume_generation(self) -> None:
        self._ensure_loop_state()
        self._resume.set()

    async def start_profile(self, **kwargs: Any) -> None:
        return None

    async def stop_profile(self) -> None:
        return None

    def ping(self) -> str:
        return "pong"


class HFReplica(RolloutReplica):
    """One ``hf`` server per replica, scheduled on the node of the replica's trainer workers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.server_class = ray.remote(HFRolloutServer)

    def rollout_worker_use_gpu(self) -> bool:
        return False

    async def launch_servers(self) -> None:
        if self.nnodes != 1:
            raise NotImplementedError("hf rollout: a replica must fit on one node (set tensor_model_parallel_size=1)")
        node_id = None
        if self.workers:
            node_id = await self.workers[0].__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id())
        options: dict[str, Any] = dict(
            name=server_actor_name(self.replica_rank, 0, self.name_suffix),
            max_concurrency=self.max_concurrency,
            num_cpus=0,  # the trainer's placement group already accounts for this machine's CPUs
        )
        if node_id is not None:
            options["scheduling_strategy"] = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
                node_id=node_id, soft=False
            )
        threads = int(os.environ.get("DEPO_CPU_ROLLOUT_THREADS", "0")) or None
        server = self.server_class.options(**options).remote(
            config=self.config,
            model_config=self.model_config,
            replica_rank=self.replica_rank,
            node_rank=0,
            num_threads=threads,
        )
        await server.ping.remote()
        self.servers = [server]
        verl_internals.set_replica_server(self, server, f"{ROLLOUT_NAME}-replica-{self.replica_rank}{self.name_suffix}")


class HFServerAdapter(BaseRollout):
    """Inside each trainer worker: forwards the actor's weights to the replica's server.

    Every rank must drain the weight generator (with FSDP2 each yielded tensor is an all-gather
    across ranks); only the first rank of each replica sends the tensors on.
    """

    def __init__(self, config: Any, model_config: Any, device_mesh: Any, replica_rank: int = -1, **kwargs: Any):
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", 0))
        rollout_world_size = (
            self.config.tensor_model_parallel_size
            * self.config.data_parallel_size
            * self.config.pipeline_model_parallel_size
        )
        self.replica_rank = rank // rollout_world_size if replica_rank == -1 else replica_rank
        self.rollout_rank = rank % rollout_world_size
        self.is_leader = self.rollout_rank == 0
        self._server = None

    def _server_handle(self):
        if self._server is None:
            self._server = ray.get_actor(server_actor_name(self.replica_rank))
        return self._server

    async def resume(self, tags: list[str]):
        return None

    async def release(self):
        return None

    @torch.no_grad()
    async def update_weights(
        self, weights, wire_format: str = "named_tensors", global_steps: int | None = None, **kwargs
    ):
        if wire_format != "named_tensors":
            raise NotImplementedError(
                f"hf rollout receives full tensors only (wire_format='named_tensors'), got {wire_format!r}"
            )
        if kwargs.get("peft_config") is not None:
            raise NotImplementedError("hf rollout: LoRA adapters are not supported; set model.lora.merge=True")
        start = time.time()
        named: list[tuple[str, torch.Tensor]] = []
        if inspect.isasyncgen(weights) or hasattr(weights, "__aiter__"):
            async for name, tensor in weights:
                if self.is_leader:
                    named.append((name, tensor.detach().to("cpu", copy=True).float()))
        else:
            for name, tensor in weights:
                if self.is_leader:
                    named.append((name, tensor.detach().to("cpu", copy=True).float()))
        if self.is_leader:
            await self._server_handle().update_weights.remote(named, global_steps=global_steps)
            logger.info(
                "hf rollout: pushed %d tensors to replica %d in %.2fs",
                len(named),
                self.replica_rank,
                time.time() - start,
            )

    def generate_sequences(self, prompts):
        raise NotImplementedError("hf rollout serves the async agent loop only")
