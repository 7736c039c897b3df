"""A verl platform for machines without an accelerator.

verl talks to the device through ``get_platform().device_module`` as if it were ``torch.cuda``
(``empty_cache``, ``synchronize``, ``mem_get_info``, RNG state, streams...). ``torch.cpu`` covers
only part of that surface, so :class:`CPUDeviceModule` fills the rest with CPU equivalents or
no-ops, and everything else falls through to ``torch.cpu`` so a new verl call fails with the
attribute name in the error rather than silently.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from verl.plugin.platform import PlatformBase

from recipe.depo.cpu import cpu_requested


class CPUDeviceModule:
    """Stands in for ``torch.cuda`` on a CPU-only machine."""

    def __getattr__(self, name: str) -> Any:
        try:
            return getattr(torch.cpu, name)
        except AttributeError:
            raise AttributeError(
                f"verl asked the CPU device module for {name!r}, which neither torch.cpu nor the "
                "depo CPU plugin provides; add it to recipe/depo/cpu/platform.py"
            ) from None

    def __eq__(self, other: object) -> bool:
        # verl's flop counter recognises the CPU by comparing the device module with torch.cpu.
        return other is torch.cpu or other is self

    def __hash__(self) -> int:
        return hash(torch.cpu)

    # Memory: there is no separate device heap; report zeros for allocator statistics and the
    # host's memory for free/total so verl's memory logging stays meaningful.
    def empty_cache(self) -> None:
        return None

    def ipc_collect(self) -> None:
        return None

    def memory_allocated(self, device: Any = None) -> int:
        return 0

    def memory_reserved(self, device: Any = None) -> int:
        return 0

    def max_memory_allocated(self, device: Any = None) -> int:
        return 0

    def max_memory_reserved(self, device: Any = None) -> int:
        return 0

    def reset_peak_memory_stats(self, device: Any = None) -> None:
        return None

    def set_per_process_memory_fraction(self, fraction: float, device: Any = None) -> None:
        return None

    def mem_get_info(self, device: Any = None) -> tuple[int, int]:
        import psutil

        vm = psutil.virtual_memory()
        return int(vm.available), int(vm.total)

    def get_device_name(self, device: Any = None) -> str:
        return "CPU"

    # RNG: the CPU generator is the only one; checkpoints save and restore it through here.
    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def get_rng_state(self, device: Any = None) -> torch.Tensor:
        return torch.get_rng_state()

    def set_rng_state(self, state: torch.Tensor, device: Any = None) -> None:
        torch.set_rng_state(state)

    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return 1

    def current_device(self) -> str:
        return "cpu"

    def set_device(self, device: Any) -> None:
        return None

    def synchronize(self, device: Any = None) -> None:
        return None

    def stream(self, stream: Any = None):
        return nullcontext()


CPU_DEVICE_MODULE = CPUDeviceModule()


class PlatformCPU(PlatformBase):
    """verl platform ``cpu``: gloo collectives, no-op device calls, logical Ray "GPU" slots.

    verl's ``ResourcePoolManager`` always asks Ray for accelerator slots, so the CPU platform names
    Ray's built-in ``GPU`` resource; the preset starts Ray with ``num_gpus`` logical slots, one per
    trainer process. Nothing in this process ever touches CUDA.
    """

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self):
        return CPU_DEVICE_MODULE

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        # Never auto-detected: the CPU path is chosen explicitly with VERL_PLATFORM=cpu.
        return cpu_requested()

    def current_device(self) -> str:
        # verl passes this straight to `.to(...)` / `torch.device(...)`; an integer would mean
        # accelerator 0, so name the CPU instead (torch.cpu.current_device() does the same).
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: int | None = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        # Ray sets this for actors holding logical GPU slots; harmless with a CPU torch build.
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
        return {"num_gpus": num_gpus}

    def ray_noset_envvars(self) -> list[str]:
        return ["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"]

    def is_ipc_supported(self) -> bool:
        # verl's vLLM weight sync then goes through ZMQ + shared memory instead of CUDA IPC handles
        return False

    def rollout_env_vars(self) -> dict[str, str]:
        """Environment for verl's rollout servers (vLLM here); Ray's runtime env takes strings only.

        Each value can be overridden from the environment of the process that starts the servers
        (the trainer), e.g. through the preset's ``ray_kwargs.ray_init.runtime_env.env_vars``.
        """
        return {
            # GiB of KV cache per vLLM server: vLLM on CPU otherwise reserves a share of the host's memory
            "VLLM_CPU_KVCACHE_SPACE": str(os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")),
            # vLLM pins its OpenMP threads to cores by default, which on a machine shared with the
            # trainer's processes (and with other jobs) fights them for the same cores
            "VLLM_CPU_OMP_THREADS_BIND": str(os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind")),
        }

    def cudart(self) -> Any:
        return None
