"""The vLLM side of the CPU plugin, run in the vLLM venv's interpreter (vLLM is not in the light
environment): vLLM's CPU linear layers keep computing from ``layer.weight`` so verl's in-place weight
sync reaches them, the entry point is what vLLM loads, and it stays inert off verl's CPU platform.
Also the CPU platform's environment for rollout servers (light environment)."""

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# One vLLM process (importing vLLM costs ~10 s) walks through the plugin's life, printing a JSON line:
# `dispatch(...)` is vLLM's CPU dispatch for one linear layer with `remove_weight=True` (its linear
# layers) and `False` (LM head / embedding): the weight's shape afterwards, and whether a weight
# written in place afterwards -- what verl's weight sync does -- is the one the layer computes with.
PROBE = """
import json, os
import torch
from importlib.metadata import entry_points
from vllm import _custom_ops as ops
from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm
from vllm.plugins import load_general_plugins


def dispatch():
    out = []
    for remove_weight in (True, False):
        layer = torch.nn.Module()
        layer.weight = torch.nn.Parameter(torch.randn(8, 16), requires_grad=False)
        dispatch_cpu_unquantized_gemm(layer, remove_weight=remove_weight)
        x, new = torch.randn(3, 16), torch.randn(8, 16)
        if layer.weight.numel():
            layer.weight.data.copy_(new)
        used = torch.allclose(layer.cpu_linear(x, layer.weight, None), x @ new.T, atol=1e-5)
        out.append(f"{tuple(layer.weight.shape)}:{used}")
    return " ".join(out)


r = {}
eps = {e.name: e for e in entry_points(group="vllm.general_plugins")}
r["entry_point"] = eps["depo_cpu"].value if "depo_cpu" in eps else None
load_general_plugins()  # no VERL_PLATFORM yet: vLLM loads it, it must change nothing
r["onednn_after_inert_load"] = ops._supports_onednn
r["dispatch_without_plugin"] = dispatch()
os.environ["VERL_PLATFORM"] = "cpu"
os.environ["VLLM_CPU_SGL_KERNEL"] = "1"
try:
    eps["depo_cpu"].load()()
    r["sgl_kernel"] = "accepted"
except Exception as exc:
    r["sgl_kernel"] = f"{type(exc).__name__}: {exc}"
del os.environ["VLLM_CPU_SGL_KERNEL"]
eps["depo_cpu"].load()()  # what load_general_plugins() calls in each vLLM process
r["onednn_after_plugin"] = ops._supports_onednn
r["dispatch_with_plugin"] = dispatch()
print(json.dumps(r))
"""


@pytest.fixture(scope="module")
def probe(vllm_python):
    env = {k: v for k, v in os.environ.items() if k not in ("VERL_PLATFORM", "VLLM_CPU_SGL_KERNEL")}
    proc = subprocess.run([vllm_python, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_without_the_plugin_vllm_moves_weights_out_of_reach(probe):
    # The problem the plugin exists for; if a vLLM upgrade stops repacking, this fails and says so.
    assert probe["dispatch_without_plugin"] == "(0,):False (8, 16):False", (
        f"vLLM's CPU dispatch no longer hides weights from in-place loads ({probe['dispatch_without_plugin']}); "
        "recipe/depo/cpu/vllm_plugin.py may be unnecessary now"
    )


def test_entry_point_is_inert_without_verl_cpu_platform(probe):
    assert probe["entry_point"] == "recipe.depo.cpu.vllm_plugin:register"
    assert probe["onednn_after_inert_load"] is True


def test_with_the_plugin_synced_weights_are_the_ones_used(probe):
    assert probe["onednn_after_plugin"] is False
    assert probe["dispatch_with_plugin"] == "(8, 16):True (8, 16):True"


def test_plugin_refuses_sgl_kernel_prepacking(probe):
    assert probe["sgl_kernel"].startswith("WeightSyncUnsupported:") and "VLLM_CPU_SGL_KERNEL=1" in probe["sgl_kernel"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}),
        (
            {"VLLM_CPU_KVCACHE_SPACE": "3", "VLLM_CPU_OMP_THREADS_BIND": "0-1"},
            {"VLLM_CPU_KVCACHE_SPACE": "3", "VLLM_CPU_OMP_THREADS_BIND": "0-1"},
        ),
    ],
)
def test_cpu_platform_rollout_env_vars(monkeypatch, env, expected):
    from recipe.depo.cpu.platform import PlatformCPU

    for key in expected:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    got = PlatformCPU().rollout_env_vars()
    assert got == expected
    assert all(isinstance(v, str) for v in got.values())  # Ray's runtime env rejects anything else
