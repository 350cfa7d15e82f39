#!/usr/bin/env bash
# Make .venv with asr_kd installed (editable) and its dependencies. Idempotent and fast when done.
#   TORCH_SPEC   what pip installs for torch when .venv has no importable torch
#                (default torch==2.13.0: the local CPU wheel here; on a GPU machine pick a CUDA build)
#   PYTHON       interpreter that creates the venv (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
py=$venv/bin/python
stamp=$venv/.asr_kd-setup

[ -x "$py" ] || "${PYTHON:-python3}" -m venv "$venv"

# torch first, so nothing later can pull an unpinned (CUDA) torch on a machine without a GPU.
if ! "$py" -c 'import torch' 2>/dev/null; then
  spec=${TORCH_SPEC:-torch==2.13.0}
  if [ -z "${TORCH_SPEC:-}" ] && ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "setup: no NVIDIA GPU; installing $spec (CPU build where a local wheel exists)"
  fi
  "$py" -m pip install -q "$spec"
fi

# Re-install the package only when its metadata changed.
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$py" -m pip install -q -e '.[dev]'
  echo "$want" > "$stamp"
fi
"$py" -c 'import torch, asr_kd; print(f"setup: asr_kd ready (torch {torch.__version__}, cuda={torch.cuda.is_available()})")'
