"""verl plugin (entry point ``verl.plugins: depo_cpu``): run verl's own trainer on CPU.

verl imports this module in every process it starts (driver, task runner, trainer workers,
rollout servers, reward and agent-loop workers). It does nothing unless ``VERL_PLATFORM=cpu``,
so installing depo-verl on a GPU cluster changes nothing there. With ``VERL_PLATFORM=cpu`` it
registers, through verl's registries:

* platform ``cpu`` (:mod:`recipe.depo.cpu.platform`);
* the stock FSDP/FSDP2 training engines for device ``cpu`` (FSDP2 is the one that works:
  FSDP1's ``sync_module_states`` needs an accelerator);
* rollout replica ``hf`` (:mod:`recipe.depo.cpu.hf_rollout`);

and applies the private-internal patches gathered in :mod:`recipe.depo.cpu.verl_internals`.

verl logs a plugin's import error only at debug level, so a failure here is reported on stderr
and re-raised; and because ``VERL_PLATFORM=cpu`` names a platform only this plugin provides,
verl's own platform lookup then fails loudly too instead of silently picking CUDA.
"""

from __future__ import annotations

import logging
import sys
import traceback

from recipe.depo.cpu import CPU_PLATFORM, ROLLOUT_NAME, cpu_requested

logger = logging.getLogger(__name__)

_registered = False


def _register_engines() -> None:
    import warnings

    with warnings.catch_warnings():
        # verl.workers.engine warns once per optional backend it cannot import (megatron,
        # torchtitan, ...) -- in every process, since the plugin loads everywhere.
        warnings.simplefilter("ignore", UserWarning)
        from verl.workers.engine.base import EngineRegistry
        from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead

    for model_type, engine_cls in (("language_model", FSDPEngineWithLMHead), ("value_model", FSDPEngineWithValueHead)):
        for backend in ("fsdp", "fsdp2"):
            try:
                EngineRegistry.register(model_type=model_type, backend=backend, device=CPU_PLATFORM)(engine_cls)
            except AssertionError:  # verl's registry asserts on duplicates: a CPU engine is already there
                pass


def _load_hf_replica():
    # Imported on first use, not at registration: the rollout server's own process imports
    # hf_rollout first, which imports verl, which loads this plugin -- an eager import here would
    # find hf_rollout half-initialised.
    from recipe.depo.cpu.hf_rollout import HFReplica

    return HFReplica


def register() -> None:
    """Register everything the CPU path needs; idempotent."""
    global _registered
    if _registered:
        return
    from verl.plugin.platform import PlatformRegistry
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    from recipe.depo.cpu import verl_internals
    from recipe.depo.cpu.platform import PlatformCPU

    # a bad value stops the registration: the run then fails at its start, not at its first poll
    poll_interval = verl_internals.poll_interval_from_env()
    if PlatformRegistry.get(CPU_PLATFORM) is not PlatformCPU:
        PlatformRegistry.register(platform=CPU_PLATFORM)(PlatformCPU)
    _register_engines()
    RolloutReplicaRegistry.register(ROLLOUT_NAME, _load_hf_replica)
    verl_internals.apply_all(poll_interval)
    _registered = True


def _load() -> None:
    if not cpu_requested():
        return
    try:
        register()
    except Exception:
        sys.stderr.write(
            "depo-verl CPU plugin (recipe.depo.cpu.plugin) failed to register with VERL_PLATFORM=cpu; "
            "verl cannot run on CPU without it:\n" + traceback.format_exc()
        )
        sys.stderr.flush()
        raise


_load()
