"""Sampling whose draws depend on a seed per row, not on the other rows of a batch.

transformers' ``generate(do_sample=True)`` draws every row from one global generator, so what a
prompt samples depends on which prompts share its batch and in what order. Both users of this
module batch whatever arrives: ``recipe.depo.evaluate`` (its hf backend) and the CPU rollout
server (``recipe.depo.cpu.hf_rollout``). With :class:`RowSeededSampler` as the logits processor of
a greedy ``generate``, each row's draw comes from its own generator, so a seed fixes the answer.
"""

from __future__ import annotations

import hashlib

import torch


def sample_seed(*parts: object) -> int:
    """A 31-bit seed from ``parts`` (joined with ``:``), stable across runs, machines and batches."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


class RowSeededSampler:
    """A logits processor that turns greedy decoding into sampling with a generator per row.

    Each row's scores become ``logits / temperature`` restricted to its ``top_k`` most likely
    tokens (when ``top_k > 0``) and to its top-p nucleus (as transformers' ``TopPLogitsWarper``:
    the smallest set of most likely tokens whose probability reaches ``top_p``), plus Gumbel
    noise from the row's own generator; the argmax of that is an exact draw from the row's
    truncated distribution (the Gumbel-max trick)."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float, device: str, top_k: int = -1) -> None:
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.top_k = int(top_k)
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]

    def __call__(self, input_ids, scores):
        scores = scores.float() / self.temperature
        if 0 < self.top_k < scores.shape[-1]:
            kth = torch.topk(scores, self.top_k, dim=-1).values[..., -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if 0.0 < self.top_p < 1.0:
            ordered, order = torch.sort(scores, dim=-1, descending=False)
            tail = ordered.softmax(dim=-1).cumsum(dim=-1) <= 1.0 - self.top_p
            tail[..., -1] = False  # the most likely token always stays
            scores = scores.masked_fill(tail.scatter(-1, order, tail), float("-inf"))
        uniform = torch.stack(
            [torch.rand(scores.shape[-1], generator=g, device=scores.device) for g in self.generators]
        )
        gumbel = -torch.log(-torch.log(uniform.clamp(min=1e-20, max=1.0 - 1e-7)))
        return scores + gumbel
