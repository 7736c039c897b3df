"""The CPU plugin's registrations, checked in fresh interpreters.

verl loads plugins once, when ``verl`` is first imported, and resolves its platform once, so each
case runs in its own subprocess with the environment it needs.
"""

import os
import subprocess
import sys
import textwrap

import pytest


def _run(code: str, platform: str | None, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "VERL_PLATFORM"}
    if platform is not None:
        env["VERL_PLATFORM"] = platform
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=180
    )


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"subprocess failed:\nSTDOUT:\n{proc.stdout}\nSTDERR:\n{proc.stderr[-4000:]}"
    return proc.stdout


def test_entry_point_is_declared():
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group="verl.plugins")}
    assert names.get("depo_cpu") == "recipe.depo.cpu.plugin"


def test_registers_everything_with_verl_platform_cpu():
    out = _ok(
        _run(
            """
            import verl  # loads the entry point
            from verl.plugin.platform import get_platform
            from verl.utils.device import get_device_name, get_nccl_backend, get_resource_name, get_torch_device
            from verl.workers.engine.base import EngineRegistry
            from verl.workers.rollout.base import get_rollout_class
            from verl.workers.rollout.replica import get_rollout_replica_class
            from recipe.depo.cpu.platform import PlatformCPU
            from recipe.depo.cpu.hf_rollout import HFReplica, HFServerAdapter

            assert isinstance(get_platform(), PlatformCPU), get_platform()
            assert get_device_name() == "cpu" and get_nccl_backend() == "gloo" and get_resource_name() == "GPU"
            dev = get_torch_device()
            dev.empty_cache(); dev.synchronize()
            assert dev.memory_allocated() == 0 and dev.mem_get_info()[1] > 0
            for mt in ("language_model", "value_model"):
                for backend in ("fsdp", "fsdp2"):
                    cls = EngineRegistry.get_engine_cls(mt, backend)
                    assert cls.__module__ == "verl.workers.engine.fsdp.transformer_impl", cls
            assert get_rollout_replica_class("hf") is HFReplica
            assert get_rollout_class("hf", "async") is HFServerAdapter
            print("REGISTERED")
            """,
            "cpu",
        )
    )
    assert "REGISTERED" in out


def test_noop_without_verl_platform():
    out = _ok(
        _run(
            """
            import verl
            import recipe.depo.cpu.plugin as plugin
            from verl.plugin.platform import PlatformRegistry
            from verl.workers.rollout.base import _ROLLOUT_REGISTRY
            from verl.workers.rollout.replica import RolloutReplicaRegistry
            import verl.utils.distributed as dist
            assert not plugin._registered
            assert PlatformRegistry.get("cpu") is None
            assert "hf" not in RolloutReplicaRegistry._registry
            assert ("hf", "async") not in _ROLLOUT_REGISTRY
            assert not getattr(dist.initialize_global_process_group_ray, "__depo_cpu_patched__", False)
            print("UNTOUCHED")
            """,
            None,
        )
    )
    assert "UNTOUCHED" in out


def test_failure_to_register_is_loud():
    proc = _run(
        """
        import sys
        sys.modules["recipe.depo.cpu.platform"] = None  # make the plugin's import fail
        import verl
        from verl.plugin.platform import get_platform
        get_platform()
        """,
        "cpu",
    )
    assert proc.returncode != 0
    assert "depo-verl CPU plugin" in proc.stderr and "failed to register" in proc.stderr
    assert "Unknown platform 'cpu'" in proc.stderr


def test_process_group_and_unpinned_offload_on_cpu():
    out = _ok(
        _run(
            """
            import torch.distributed as td
            import verl
            from verl.workers import engine_workers
            from verl.workers.engine.fsdp import transformer_impl
            engine_workers.initialize_global_process_group_ray(timeout_second=60)
            assert td.is_initialized() and td.get_backend() == "gloo", td.get_backend()
            td.destroy_process_group()
            policy = transformer_impl.CPUOffloadPolicy(pin_memory=True)
            assert policy.pin_memory is False
            print("GLOO_OK")
            """,
            "cpu",
            {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29731"},
        )
    )
    assert "GLOO_OK" in out


@pytest.mark.parametrize("name", ["hf"])
def test_preset_selects_plugin_pieces(name):
    from pathlib import Path

    import yaml

    import recipe.depo

    preset = yaml.safe_load((Path(recipe.depo.__file__).parent / "config" / "cpu.yaml").read_text())
    assert preset["trainer"]["device"] == "cpu"
    assert preset["actor_rollout_ref"]["rollout"]["name"] == name
    assert preset["actor_rollout_ref"]["actor"]["strategy"] == "fsdp2"
    assert preset["actor_rollout_ref"]["model"]["override_config"]["attn_implementation"] == "sdpa"
    assert preset["ray_kwargs"]["ray_init"]["num_cpus"] == 16
    assert preset["ray_kwargs"]["ray_init"]["runtime_env"]["env_vars"]["VERL_PLATFORM"] == "cpu"


_POLL_PROBE = """
    import sys
    import verl
    # the patch waits for the module: a process that never builds a buffer never imports it
    print("IMPORTED_EARLY", "verl.trainer.ppo.v1.replay_buffer" in sys.modules)
    from verl.trainer.ppo.v1 import replay_buffer as rb
    slept = []
    rb.time.sleep = slept.append  # what _wait_for_next_poll waits, without waiting
    for cls in (rb.ReplayBuffer, rb.ReplayBufferAsync):
        buf = cls(trainer_mode="sync", trainer_config={}, max_off_policy_threshold=None,
                  max_off_policy_strategy="drop", sampler_kwargs={})
        buf._wait_for_next_poll("train", 0.0)
    explicit = rb.ReplayBuffer(trainer_mode="sync", trainer_config={}, max_off_policy_threshold=None,
                               max_off_policy_strategy="drop", sampler_kwargs={}, poll_interval=3.0)
    explicit._wait_for_next_poll("train", 0.0)
    positional = rb.ReplayBuffer("sync", {}, None, "drop", {}, 4.0)
    positional._wait_for_next_poll("train", 0.0)
    print("SLEPT", slept)
"""


@pytest.mark.parametrize(
    "interval, slept",
    [(None, "[2.0, 2.0, 3.0, 4.0]"), ("0.05", "[0.05, 0.05, 3.0, 4.0]")],
    ids=["verl's-2s", "from-the-environment"],
)
def test_replay_buffer_polls_at_the_interval_the_environment_sets(interval, slept):
    """verl's V1 replay buffer sleeps poll_interval between looks for finished rollouts, 2 s with
    no way to set it; DEPO_CPU_POLL_INTERVAL_S sets it on CPU (a caller's own value still wins)."""
    env = {} if interval is None else {"DEPO_CPU_POLL_INTERVAL_S": interval}
    proc = _run(_POLL_PROBE, "cpu", {"DEPO_CPU_POLL_INTERVAL_S": "", **env})
    out = _ok(proc)
    assert "IMPORTED_EARLY False" in out
    assert f"SLEPT {slept}" in out


def test_replay_buffer_poll_interval_is_left_alone_without_the_cpu_platform():
    proc = _run(_POLL_PROBE, None, {"DEPO_CPU_POLL_INTERVAL_S": "0.05"})
    assert "SLEPT [2.0, 2.0, 3.0, 4.0]" in _ok(proc)


@pytest.mark.parametrize("raw", ["0", "-1", "fast", "nan"])
def test_a_bad_poll_interval_fails_loudly_naming_the_variable(raw):
    proc = _run(
        "import verl\nfrom verl.plugin.platform import get_platform\nget_platform()",
        "cpu",
        {"DEPO_CPU_POLL_INTERVAL_S": raw},
    )
    assert proc.returncode != 0
    assert f"DEPO_CPU_POLL_INTERVAL_S must be a positive number of seconds, got {raw!r}" in proc.stderr
