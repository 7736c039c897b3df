"""Generation backends for evaluate: n sampled responses per query.

* ``hf``: transformers ``generate`` (what the CPU plugin's rollout server runs), a batch of queries
  with their n samples each as one padded batch (at most ``HF_MAX_ROWS`` rows per call, or n). Each row
  samples with noise from its own generator, seeded from its query's seed and its sample index
  (:class:`RowSeededSampler`), so a query's responses do not depend on which queries share its
  batch: a resumed run gives the same results as an uninterrupted one.
* ``vllm``: vLLM's offline ``LLM.generate`` with a per-request seed (same property).
* ``auto``: vLLM when it is importable and a GPU is present, else ``hf``.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass

from recipe.depo.evaluate.data import EvalError
from recipe.depo.seeded_sampling import RowSeededSampler, sample_seed

BACKENDS = ("auto", "hf", "vllm")
# rows (queries x samples) per hf generate call: bounds the padded batch's memory on a GPU
HF_MAX_ROWS = 256


@dataclass(frozen=True)
class Sampling:
    n: int
    temperature: float
    top_p: float
    max_response_length: int


@dataclass(frozen=True)
class Generation:
    token_ids: list[int]
    text: str


def query_seed(seed: int, set_name: str, index: int) -> int:
    """A 31-bit seed per query, stable across runs and processes."""
    digest = hashlib.sha256(f"{seed}:{set_name}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _gpu_available() -> bool:
    import torch

    return torch.cuda.is_available()


def choose_backend(name: str) -> str:
    if name not in BACKENDS:
        raise EvalError(f"--backend {name!r}: unknown backend; choose one of {', '.join(BACKENDS)}")
    has_vllm = importlib.util.find_spec("vllm") is not None
    if name == "auto":
        return "vllm" if has_vllm and _gpu_available() else "hf"
    if name == "vllm" and not has_vllm:
        raise EvalError("--backend vllm: vLLM is not installed in this Python (pip install 'depo-verl[gpu]')")
    return name


def _load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if not getattr(tokenizer, "chat_template", None):
        raise EvalError(f"--model {path}: the tokenizer has no chat template; the eval prompts are chat messages")
    return tokenizer


def chat_ids(tokenizer, messages: list[dict]) -> list[int]:
    """The prompt as verl's RL dataset builds it: the chat template with the generation prompt."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    return list(ids)


class HFBackend:
    def __init__(self, model_path: str, device: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, GenerationConfig

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        # fp32 on CPU (no fast bf16 here), bf16 on GPU
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.tokenizer = _load_tokenizer(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(self.device).eval()
        try:
            gen_cfg = GenerationConfig.from_pretrained(model_path)
        except OSError:
            gen_cfg = self.model.generation_config
        eos = gen_cfg.eos_token_id if gen_cfg.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos_ids = sorted({eos} if isinstance(eos, int) else set(eos or []))
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.eos_ids[0] if self.eos_ids else 0)
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None)

    def generate(self, prompts: list[list[int]], seeds: list[int], sampling: Sampling) -> list[list[Generation]]:
        rows = [(q, j) for q in range(len(prompts)) for j in range(sampling.n)]
        texts: list[list[Generation]] = [[] for _ in prompts]
        for start in range(0, len(rows), max(HF_MAX_ROWS, sampling.n)):
            chunk = rows[start : start + max(HF_MAX_ROWS, sampling.n)]
            outputs = self._batch(
                [prompts[q] for q, _ in chunk], [sample_seed(seeds[q], j) for q, j in chunk], sampling
            )
            for (q, _), generation in zip(chunk, outputs, strict=True):
                texts[q].append(generation)
        return texts

    def _batch(self, prompts: list[list[int]], row_seeds: list[int], sampling: Sampling) -> list[Generation]:
        import torch
        from transformers import LogitsProcessorList

        longest = max(len(p) for p in prompts)
        max_new = sampling.max_response_length
        if self.max_positions:
            max_new = min(max_new, self.max_positions - longest)
        if max_new < 1:
            raise EvalError(f"a prompt of {longest} tokens leaves no room in the model's {self.max_positions}")
        # left padding: every row's next token is at the same position
        input_ids = torch.full((len(prompts), longest), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, prompt in enumerate(prompts):
            input_ids[row, longest - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            attention_mask[row, longest - len(prompt) :] = 1
        kwargs = dict(
            max_new_tokens=max_new,
            do_sample=False,  # sampling, when asked, is RowSeededSampler's noise before the argmax
            eos_token_id=self.eos_ids or None,
            pad_token_id=self.pad_id,
            attention_mask=attention_mask.to(self.device),
            temperature=None,
            top_p=None,
            top_k=None,
        )
        if sampling.temperature > 0.0:
            sampler = RowSeededSampler(row_seeds, sampling.temperature, sampling.top_p, self.device)
            kwargs["logits_processor"] = LogitsProcessorList([sampler])
        with torch.no_grad():
            out = self.model.generate(input_ids.to(self.device), **kwargs)
        results = []
        eos = set(self.eos_ids)
        for row in out[:, longest:].tolist():
            cut = next((pos + 1 for pos, tok in enumerate(row) if tok in eos), len(row))  # keep the stop token
            ids = row[:cut]
            results.append(Generation(ids, self.tokenizer.decode(ids, skip_special_tokens=True)))
        return results


class VLLMBackend:
    def __init__(
        self,
        model_path: str,
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        seed: int = 0,
        enforce_eager: bool = False,
    ):
        from vllm import LLM

        self.tokenizer = _load_tokenizer(model_path)
        kwargs = dict(model=model_path, tensor_parallel_size=tensor_parallel_size, seed=seed)
        if enforce_eager:
            kwargs["enforce_eager"] = True
        if max_model_len:
            kwargs["max_model_len"] = max_model_len
        self.llm = LLM(**kwargs)

    def generate(self, prompts: list[list[int]], seeds: list[int], sampling: Sampling) -> list[list[Generation]]:
        from vllm import SamplingParams

        params = [
            SamplingParams(
                n=sampling.n,
                temperature=max(sampling.temperature, 0.0),
                top_p=sampling.top_p,
                max_tokens=sampling.max_response_length,
                seed=seed,
            )
            for seed in seeds
        ]
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompts], params, use_tqdm=False)
        return [
            [
                Generation(list(c.token_ids), self.tokenizer.decode(list(c.token_ids), skip_special_tokens=True))
                for c in out.outputs
            ]
            for out in outputs
        ]
