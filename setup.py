"""depo-verl: DEPO (Difficulty-Estimated Policy Optimization) as a verl recipe.

The installed packages are ``recipe.depo`` (``recipe`` is a namespace package so that other
verl recipes can live beside it) and ``data_prep``.
"""

import runpy
from pathlib import Path

from setuptools import find_namespace_packages, setup

HERE = Path(__file__).parent
VERL_PIN = (HERE / "recipe" / "depo" / "REQUIRED_VERL.txt").read_text().strip()
# The side products' dependencies (router, report), kept beside the check that names them.
SIDE_EXTRAS = runpy.run_path(str(HERE / "recipe" / "depo" / "extras.py"))["EXTRAS"]

setup(
    name="depo-verl",
    version="0.1.0",
    description="DEPO: Difficulty-Estimated Policy Optimization, a verl recipe",
    license="Apache-2.0",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=find_namespace_packages(include=["recipe.depo", "recipe.depo.*", "data_prep", "data_prep.*"]),
    package_data={"recipe.depo": ["REQUIRED_VERL.txt", "config/*.yaml", "cpu/vllm_constraints.txt"]},
    include_package_data=True,
    # torch is deliberately not listed: verl does not pin it either, and on a CPU machine the
    # CPU build must be installed first (`pip install torch==2.13.0`) or pip pulls a CUDA build.
    # What training needs (the trainer, estimator, reward, start-up checks, data_prep, evaluate).
    install_requires=[
        f"verl[verl-core]{VERL_PIN}",
        "transformers>=5.5.3,<5.11,!=5.6.0",  # verl 0.9.1's own range
        "pandas",
        "pyarrow>=19.0.0",
        "omegaconf",
        "math-verify",
        "tqdm",
    ],
    extras_require={
        # `router`: the live proxy; `report`: the report's plots (recipe/depo/extras.py lists them).
        # verl[verl-core] itself already brings every `router` package (fastapi and uvicorn
        # directly, aiohttp and prometheus_client through ray[default], pyyaml through hydra), so
        # on a verl 0.9.1 install that extra changes nothing; it names what the router imports.
        # matplotlib is the one side dependency a training install now goes without.
        **{name: sorted(dists) for name, dists in SIDE_EXTRAS.items()},
        # ruff runs in CI before the tests (.ci/run; settings in ruff.toml). Pinned: its formatter's
        # output changes between releases, and `ruff format --check` must not fail on that alone.
        "test": ["pytest>=8", "pytest-timeout", "ruff==0.17.6"],
        # GPU clusters: verl 0.9.1's vLLM extra (vllm 0.24.0, torch 2.11.0) and its fsdp extra, which
        # brings flash-attn 2.8.3 (verl's default attention, flash_attention_2, and its fast log-prob
        # path need it) matched to that torch. flash-attn builds against the installed torch, so
        # install with --no-build-isolation after torch; CUDA 12 and 13 lines in docs/gpu.md.
        # Never install this on CPU.
        "gpu": [f"verl[vllm,fsdp]{VERL_PIN}"],
    },
    entry_points={
        # verl imports every `verl.plugins` entry point in every process; the module only
        # registers anything when VERL_PLATFORM=cpu.
        "verl.plugins": ["depo_cpu = recipe.depo.cpu.plugin"],
        # vLLM calls every general plugin in each of its processes; this one only acts with
        # VERL_PLATFORM=cpu on vLLM's CPU platform (see recipe/depo/cpu/vllm_plugin.py).
        "vllm.general_plugins": ["depo_cpu = recipe.depo.cpu.vllm_plugin:register"],
    },
)
