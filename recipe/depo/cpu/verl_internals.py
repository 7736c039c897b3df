"""Every place the CPU backend reaches into a private part of verl 0.9.1, and nothing else.

verl has public registries for platforms, training engines and rollout replicas, which
``plugin.py`` uses. Four things have no public hook; each is done here, fails with
:class:`VerlInternalsChanged` naming the internal when verl moves it, and is listed (with the
upstream hook that would remove it) in docs/verl_surface.md. tests/cpu/test_cpu_plugin.py checks
their effect in fresh interpreters.

1. ``verl.workers.rollout.base._ROLLOUT_REGISTRY``: the dict mapping ``(name, "async")`` to the
   worker-side ``BaseRollout`` class path. There is no register function.
2. ``verl.workers.engine.fsdp.transformer_impl.CPUOffloadPolicy``: FSDP2 forward-only models
   (the reference policy) are wrapped with ``CPUOffloadPolicy(pin_memory=True)``; pinning needs
   an accelerator and raises on a CPU-only torch. The module's name is rebound to a subclass
   that never pins.
3. ``verl.utils.distributed.initialize_global_process_group_ray``: it builds the backend string
   ``"cpu:gloo,<device>:<backend>"``, which becomes ``"cpu:gloo,cpu:gloo"`` on CPU and torch
   rejects the duplicate device. The wrapper passes plain ``"gloo"`` when the platform is CPU;
   ``verl.workers.engine_workers`` imported the function by name, so its binding is replaced too.
4. ``RolloutReplica._server_handle`` / ``_server_address``: verl's ``LLMServerManager`` reads
   these private fields of every replica (not the public properties over them); a replica's
   ``launch_servers`` must fill them, as verl's own vLLM/SGLang replicas do.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from typing import Any

from recipe.depo.cpu import ROLLOUT_NAME

HF_ADAPTER_FQN = "recipe.depo.cpu.hf_rollout.HFServerAdapter"

_ROLLOUT_BASE = "verl.workers.rollout.base"
_FSDP_IMPL = "verl.workers.engine.fsdp.transformer_impl"
_DISTRIBUTED = "verl.utils.distributed"
_ENGINE_WORKERS = "verl.workers.engine_workers"
_PATCH_MARK = "__depo_cpu_patched__"


class VerlInternalsChanged(RuntimeError):
    """verl no longer has the private internal the CPU plugin relies on."""


def _changed(what: str, detail: str) -> VerlInternalsChanged:
    return VerlInternalsChanged(
        f"depo CPU plugin: verl internal {what} is not as expected ({detail}). This plugin was "
        "written against verl 0.9.1 (recipe/depo/REQUIRED_VERL.txt); update "
        "recipe/depo/cpu/verl_internals.py for the installed verl."
    )


# ---------------------------------------------------------------- 1. rollout adapter dict
def register_rollout_adapter(name: str = ROLLOUT_NAME, fqn: str = HF_ADAPTER_FQN) -> None:
    base = importlib.import_module(_ROLLOUT_BASE)
    registry = getattr(base, "_ROLLOUT_REGISTRY", None)
    if not isinstance(registry, dict):
        raise _changed(f"{_ROLLOUT_BASE}._ROLLOUT_REGISTRY", f"found {type(registry).__name__}, expected dict")
    registry[(name, "async")] = fqn


# ---------------------------------------------------------------- 2. pin_memory
def patch_unpinned_cpu_offload() -> None:
    impl = importlib.import_module(_FSDP_IMPL)
    current = getattr(impl, "CPUOffloadPolicy", None)
    if current is None:
        raise _changed(f"{_FSDP_IMPL}.CPUOffloadPolicy", "name not found")
    if getattr(current, _PATCH_MARK, False):
        return

    class UnpinnedCPUOffloadPolicy(current):  # type: ignore[misc, valid-type]
        def __init__(self, pin_memory: bool = False, *args, **kwargs):
            super().__init__(*args, pin_memory=False, **kwargs)

    setattr(UnpinnedCPUOffloadPolicy, _PATCH_MARK, True)
    UnpinnedCPUOffloadPolicy.__qualname__ = UnpinnedCPUOffloadPolicy.__name__
    impl.CPUOffloadPolicy = UnpinnedCPUOffloadPolicy


# ---------------------------------------------------------------- 3. process group backend
def patch_process_group_backend() -> None:
    dist = importlib.import_module(_DISTRIBUTED)
    original = getattr(dist, "initialize_global_process_group_ray", None)
    if original is None:
        raise _changed(f"{_DISTRIBUTED}.initialize_global_process_group_ray", "function not found")
    if getattr(original, _PATCH_MARK, False):
        wrapper = original
    else:
        params = inspect.signature(original).parameters
        if "backend" not in params:
            raise _changed(f"{_DISTRIBUTED}.initialize_global_process_group_ray", "no `backend` parameter")

        @functools.wraps(original)
        def wrapper(timeout_second=None, backend=None):
            from verl.utils.device import get_device_name

            if backend is None and get_device_name() == "cpu":
                backend = "gloo"
            return original(timeout_second=timeout_second, backend=backend)

        setattr(wrapper, _PATCH_MARK, True)
        dist.initialize_global_process_group_ray = wrapper
    # engine_workers did `from verl.utils.distributed import initialize_global_process_group_ray`;
    # rebind its copy if it is already imported (plugins load before it normally is).
    workers = sys.modules.get(_ENGINE_WORKERS)
    if workers is not None and hasattr(workers, "initialize_global_process_group_ray"):
        workers.initialize_global_process_group_ray = wrapper


def apply_all() -> None:
    register_rollout_adapter()
    patch_unpinned_cpu_offload()
    patch_process_group_backend()


# ---------------------------------------------------------------- 4. replica server fields
def set_replica_server(replica: Any, handle: Any, address: str) -> None:
    """Publish a launched server where verl's LLMServerManager looks for it."""
    for name in ("_server_handle", "_server_address"):
        if name not in vars(replica):
            raise _changed(f"RolloutReplica.{name}", "no longer set by RolloutReplica.__init__")
    replica._server_handle = handle
    replica._server_address = address
