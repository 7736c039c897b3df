"""Every place the CPU backend reaches into a private part of verl 0.9.1, and nothing else.

verl has public registries for platforms, training engines and rollout replicas, which
``plugin.py`` uses. Five things have no public hook; each is done here, fails with
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
5. ``verl.trainer.ppo.v1.replay_buffer.ReplayBuffer``'s ``poll_interval``: the V1 trainer waits
   for finished rollouts by sleeping 2 s between looks, and builds the buffer without a way to
   set it. On a GPU a generation round takes minutes and 2 s is noise; on this CPU a round takes
   well under a second, so every round costs a whole poll and step times measure the sleep.
   With ``DEPO_CPU_POLL_INTERVAL_S`` set, ``ReplayBuffer.__init__`` uses that interval instead
   (patched when the module is imported, so processes that never build a buffer never import it).
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.util
import inspect
import math
import os
import sys
from typing import Any

from recipe.depo.cpu import ROLLOUT_NAME

HF_ADAPTER_FQN = "recipe.depo.cpu.hf_rollout.HFServerAdapter"

_ROLLOUT_BASE = "verl.workers.rollout.base"
_FSDP_IMPL = "verl.workers.engine.fsdp.transformer_impl"
_DISTRIBUTED = "verl.utils.distributed"
_ENGINE_WORKERS = "verl.workers.engine_workers"
_REPLAY_BUFFER = "verl.trainer.ppo.v1.replay_buffer"
POLL_INTERVAL_ENV = "DEPO_CPU_POLL_INTERVAL_S"
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


# ---------------------------------------------------------------- 5. replay buffer poll interval
def poll_interval_from_env(environ=os.environ) -> float | None:
    """The interval ``DEPO_CPU_POLL_INTERVAL_S`` asks for; None when unset or empty (verl's own)."""
    raw = environ.get(POLL_INTERVAL_ENV, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{POLL_INTERVAL_ENV} must be a positive number of seconds, got {raw!r}")
    return value


def patch_replay_buffer_poll(module: Any, interval: float) -> None:
    """Make ``module.ReplayBuffer`` (and its subclasses) poll every ``interval`` seconds unless
    the caller passes ``poll_interval`` itself."""
    buffer_cls = getattr(module, "ReplayBuffer", None)
    if not inspect.isclass(buffer_cls):
        raise _changed(f"{_REPLAY_BUFFER}.ReplayBuffer", "class not found")
    init = buffer_cls.__init__
    if getattr(init, _PATCH_MARK, False):
        init.depo_interval = interval
        return
    params = list(inspect.signature(init).parameters)
    if "poll_interval" not in params:
        raise _changed(f"{_REPLAY_BUFFER}.ReplayBuffer.__init__", "no `poll_interval` parameter")
    position = params.index("poll_interval") - 1  # among the arguments after self

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        if len(args) <= position:  # the caller's own value, by name or by position, wins
            kwargs.setdefault("poll_interval", wrapper.depo_interval)
        init(self, *args, **kwargs)

    wrapper.depo_interval = interval
    setattr(wrapper, _PATCH_MARK, True)
    buffer_cls.__init__ = wrapper


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs ``callback(module)`` right after ``name`` is first imported, in whatever process."""

    def __init__(self, name: str, callback) -> None:
        self.name, self.callback = name, callback

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # one module, once; the real finders locate it
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_patch(module):
            exec_module(module)
            self.callback(module)

        spec.loader.exec_module = exec_then_patch
        return spec


def patch_replay_buffer_poll_on_import(interval: float) -> None:
    def apply(module):
        patch_replay_buffer_poll(module, interval)

    if _REPLAY_BUFFER in sys.modules:
        apply(sys.modules[_REPLAY_BUFFER])
        return
    sys.meta_path[:] = [f for f in sys.meta_path if not (isinstance(f, _AfterImport) and f.name == _REPLAY_BUFFER)]
    sys.meta_path.insert(0, _AfterImport(_REPLAY_BUFFER, apply))


def apply_all(poll_interval: float | None = None) -> None:
    """Every patch; the replay buffer's only with an interval (``poll_interval_from_env()``)."""
    register_rollout_adapter()
    patch_unpinned_cpu_offload()
    patch_process_group_backend()
    if poll_interval is not None:
        patch_replay_buffer_poll_on_import(poll_interval)


# ---------------------------------------------------------------- 4. replica server fields
def set_replica_server(replica: Any, handle: Any, address: str) -> None:
    """Publish a launched server where verl's LLMServerManager looks for it."""
    for name in ("_server_handle", "_server_address"):
        if name not in vars(replica):
            raise _changed(f"RolloutReplica.{name}", "no longer set by RolloutReplica.__init__")
    replica._server_handle = handle
    replica._server_address = address
