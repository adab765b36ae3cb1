#!/usr/bin/env bash
# All tests: library in sync with the notebooks, README in sync with index.ipynb, every notebook, the docs site, pytest.
source "$(dirname "$0")/env.sh"
step() { echo; echo "==> $*"; }

step "nbdev_clean + nbdev_export leave the tree unchanged"
before=$(git status --porcelain)
nbdev_clean
nbdev_export
after=$(git status --porcelain)
if [ "$before" != "$after" ]; then
  echo "FAIL: notebooks not clean or library out of sync with the notebooks:"; git status --porcelain; git diff --stat; exit 1
fi
if [ -n "${CI:-}" ] && [ -n "$after" ]; then echo "FAIL: uncommitted files in CI:"; echo "$after"; exit 1; fi

step "README.md matches nbs/index.ipynb"
python tools/make_readme.py --check

step "nbdev_test (every notebook)"
nbdev_test --n_workers 2 --timing

step "docs site (tools/build_docs.py -> docs/site/, checked in chromium by tests/test_docs.py)"
python tools/build_docs.py --strict

step "pytest"
python -m pytest -q tests/
