#!/usr/bin/env bash
# Create the project's Python virtual environment at <repo>/.venv (gitignored) and install
# scripts/requirements.txt into it. Idempotent: an existing .venv is reused.
#   scripts/setup_venv.sh            # uses python3 from PATH
#   PYTHON=python3.11 scripts/setup_venv.sh
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-python3}"
venv="$repo/.venv"
if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --upgrade pip >/dev/null
"$venv/bin/python" -m pip install -r "$repo/scripts/requirements.txt"
"$venv/bin/python" -c 'import torch, transformers, tokenizers, safetensors; print("torch", torch.__version__, "transformers", transformers.__version__, "tokenizers", tokenizers.__version__)'
