# Sourced by demo.sh and test.sh: make ./.venv with hybrid_ilrl and its dev tools, once.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import hybrid_ilrl, nbdev, triton, pytest" 2>/dev/null; then
  .venv/bin/python -m pip install -q --upgrade pip
  if ! command -v nvidia-smi >/dev/null 2>&1 && ! .venv/bin/python -c "import torch" 2>/dev/null; then
    # no GPU: the CPU build of torch (a few hundred MB instead of several GB)
    .venv/bin/python -m pip install -q torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cpu
  fi
  .venv/bin/python -m pip install -q -e ".[dev]"
fi
export PATH="$PWD/.venv/bin:$PATH"
# no GPU: Triton kernels run in its interpreter, on the CPU
command -v nvidia-smi >/dev/null 2>&1 || export TRITON_INTERPRET=1
