# Sourced by demo.sh and test.sh: make ./.venv with hybrid_ilrl and its dev tools; reinstall when the dependencies change.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=$(cat settings.ini setup.py | sha1sum | cut -d' ' -f1)
if [ "$(cat .venv/.installed 2>/dev/null)" != "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  if ! command -v nvidia-smi >/dev/null 2>&1 && ! .venv/bin/python -c "import torch" 2>/dev/null; then
    # no GPU: pin torch; pip fetches it from the configured index (PIP_EXTRA_INDEX_URL can name a CPU-wheel index)
    .venv/bin/python -m pip install -q --retries 0 --timeout 15 torch==2.13.0
  fi
  .venv/bin/python -m pip install -q -e ".[dev]"
  echo "$stamp" > .venv/.installed
fi
export PATH="$PWD/.venv/bin:$PATH"
