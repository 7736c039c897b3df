"""What a launcher will ask of each GPU and of the checkpoint disk, from the models' shapes.

The same arithmetic as ``python -m recipe.depo.cluster_check`` (which applies it to the real
cluster): parameters counted from each model's config on the meta device (no weights), the
checkpoint at 12 bytes per parameter (fp32 weights + Adam), the actor's FSDP shard of training
state at 16 bytes per parameter over all GPUs, vLLM's ``gpu_memory_utilization`` share of the
total, a CUDA context per process, and on the estimator's GPU (colocated) the estimator.

    python benchmarks/gpu_memory_plan.py                       # 80 GB GPUs (79.6 GiB), 2 x 8, util 0.8
    python benchmarks/gpu_memory_plan.py --gpu-mem-util 0.7 --total-gib 79.6 --kept 2

The Qwen2.5 shapes are those of the public configs (hidden size, layers, heads, vocabulary), set
here because no model can be downloaded; DistilBERT's are transformers' defaults, which are
distilbert-base-uncased's.
"""

from __future__ import annotations

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from recipe.depo.cluster_check import (  # noqa: E402
    CKPT_BYTES_PER_PARAM,
    ESTIMATOR_WORKSPACE_GIB,
    GIB,
    TRAIN_BYTES_PER_PARAM,
    gpu_memory_problems,
)

QWEN = {
    "Qwen2.5-1.5B-Instruct": dict(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
    "Qwen2.5-7B-Instruct": dict(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
        tie_word_embeddings=False,
    ),
}


def _count(module_cls, config) -> int:
    import torch

    with torch.device("meta"):
        return sum(p.numel() for p in module_cls(config).parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total-gib", type=float, default=79.6, help="GPU memory as torch reports it")
    parser.add_argument("--free-gib", type=float, default=None, help="free before the run (default: total - 0.5)")
    parser.add_argument("--gpu-mem-util", type=float, default=0.8)
    parser.add_argument("--gpus", type=int, default=16)
    parser.add_argument("--kept", type=int, default=2, help="trainer.max_actor_ckpt_to_keep")
    args = parser.parse_args()
    from transformers import DistilBertConfig, DistilBertModel, Qwen2Config, Qwen2ForCausalLM

    estimator = _count(DistilBertModel, DistilBertConfig())
    free = args.free_gib if args.free_gib is not None else args.total_gib - 0.5
    print(f"estimator: distilbert-base-uncased shape, {estimator / 1e6:.1f} M parameters")
    print(f"GPUs: {args.gpus} x {args.total_gib} GiB ({free:.1f} free before the run), vLLM {args.gpu_mem_util}")
    print()
    header = "| policy | params | checkpoint | kept | disk | vLLM | actor shard | contexts | estimator | GPU 0 total |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name, shape in QWEN.items():
        policy = _count(Qwen2ForCausalLM, Qwen2Config(**shape))
        ckpt = (policy + estimator) * CKPT_BYTES_PER_PARAM / GIB
        plan = {
            "gpu_memory_utilization": args.gpu_mem_util,
            "actor_gib_per_gpu": policy * TRAIN_BYTES_PER_PARAM / args.gpus / GIB,
            "estimator_gib": estimator * TRAIN_BYTES_PER_PARAM / GIB + ESTIMATOR_WORKSPACE_GIB,
            "estimator_gpu": ("n", 0),
        }
        problems, _ = gpu_memory_problems(plan, [(free, args.total_gib)], "n")
        vllm = args.gpu_mem_util * args.total_gib
        total = vllm + plan["actor_gib_per_gpu"] + 2.0 + plan["estimator_gib"] + 1.0
        verdict = "fits" if not problems else "DOES NOT FIT"
        print(
            f"| {name} | {policy / 1e9:.2f} B | {ckpt:.1f} GiB | {args.kept} | {args.kept * ckpt:.0f} GiB | "
            f"{vllm:.1f} | {plan['actor_gib_per_gpu']:.1f} | 2.0 | {plan['estimator_gib'] + 1.0:.1f} | "
            f"{total:.1f} of {free:.1f} free ({verdict}) |"
        )


if __name__ == "__main__":
    main()
