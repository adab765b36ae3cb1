#!/usr/bin/env bash
# All tests: library in sync with the notebooks, README in sync with index.ipynb, every notebook (run once, by the docs
# build), the docs site, pytest. Installs what the checks need (chromium, npm) when it can; fails when it can't.
# HYBRID_ILRL_SKIP_BROWSER=1 skips the in-browser docs checks (loudly). One model/kernel cache for the whole run:
# $HYBRID_ILRL_CACHE, default runs/cache/ (git-ignored), so the task suite's teacher is trained once per clone.
source "$(dirname "$0")/env.sh"
step() { echo; echo "==> $*"; }
t_start=$SECONDS

# apt_install PKG: install a Debian package as root or through sudo; false when neither works
apt_install() {
  local as=()
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then as=(sudo -n); else return 1; fi
  fi
  command -v apt-get >/dev/null 2>&1 || return 1
  echo "installing $1 with apt-get ..."
  "${as[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${as[@]}" apt-get install -y -qq "$1" >/dev/null
}

step "set-up: chromium (the docs site's browser checks), npm (MathJax for the docs site), one cache"
if [ "${HYBRID_ILRL_SKIP_BROWSER:-0}" = 1 ]; then
  echo "WARNING: HYBRID_ILRL_SKIP_BROWSER=1: the docs site's in-browser checks (tests/test_docs.py) are SKIPPED" >&2
elif ! command -v chromium >/dev/null 2>&1; then
  if ! apt_install chromium; then
    echo "FAIL: chromium is missing and could not be installed (needs apt-get as root or via sudo)." >&2
    echo "      Install it (Debian: apt-get install chromium), or run with HYBRID_ILRL_SKIP_BROWSER=1" >&2
    echo "      to skip the in-browser checks of the docs site." >&2
    exit 1
  fi
fi
if ! command -v npm >/dev/null 2>&1; then
  apt_install npm || echo "warning: npm is missing and could not be installed; the docs build needs it once" \
                          "to fetch MathJax into docs/.cache/ (it says so if it does)" >&2
fi
export HYBRID_ILRL_CACHE="${HYBRID_ILRL_CACHE:-$PWD/runs/cache}"
mkdir -p "$HYBRID_ILRL_CACHE"
browser=$(command -v chromium || true)
[ "${HYBRID_ILRL_SKIP_BROWSER:-0}" = 1 ] && browser="skipped (HYBRID_ILRL_SKIP_BROWSER=1)"
echo "chromium: $browser; npm: $(command -v npm || echo none); cache: $HYBRID_ILRL_CACHE"

step "nbdev_clean + nbdev_export leave the tree unchanged"
before=$(git status --porcelain)
nbdev_clean
nbdev_export
after=$(git status --porcelain)
if [ "$before" != "$after" ]; then
  echo "FAIL: notebooks not clean or library out of sync with the notebooks:"
  git status --porcelain
  git diff --stat
  exit 1
fi
if [ -n "${CI:-}" ] && [ -n "$after" ]; then
  echo "FAIL: uncommitted files in CI:"
  echo "$after"
  exit 1
fi

step "README.md matches nbs/index.ipynb"
python tools/make_readme.py --check

step "every notebook, run once as nbdev_test runs it, into the docs site (tools/build_docs.py --strict -> docs/site/)"
t0=$SECONDS
python tools/build_docs.py --strict --workers 2
echo "notebooks + docs site: $((SECONDS - t0)) s"

step "pytest (tests/test_docs.py checks docs/site in chromium)"
t0=$SECONDS
python -m pytest -q tests/
echo "pytest: $((SECONDS - t0)) s"

echo "all checks passed in $((SECONDS - t_start)) s"
