#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU (5-8 minutes): the `cuda`-flagged notebook cells and tests, then both
# GPU benchmarks: the kernel (bf16, N=16,384 x V=128,256) vs eager, torch.compile and Liger; the fused head (H=4096,
# V=128,256) vs Liger's fused-linear JSD and the unfused path. Ends with one table, also written to summary.md.
#
#   bash scripts/gpu_check.sh [--out DIR] [--dry-run]
#     --out DIR    where logs, the benchmarks' CSV/PNG and summary.md go (default runs/gpu_check/<date-time>/)
#     --dry-run    no GPU needed: checks this script on CPU in a minute or two (toy benchmark sizes; the cuda notebooks
#                  are listed, not run; the cuda tests are collected, not run)
#   GPU_CHECK_TEST_TIMEOUT (default 200 s: notebooks and tests, side by side), GPU_CHECK_BENCH_TIMEOUT (150 s each),
#   GPU_CHECK_BENCH (the benchmark module, default hybrid_ilrl.bench).
set -euo pipefail
cd "$(dirname "$0")/.."
dry=0 res=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1 ;;
    --out) res="${2:?--out needs a folder}"; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
t_start=$SECONDS
test_timeout=${GPU_CHECK_TEST_TIMEOUT:-200}
bench_timeout=${GPU_CHECK_BENCH_TIMEOUT:-150}
bench=${GPU_CHECK_BENCH:-hybrid_ilrl.bench}
step() { echo; echo "==> $* ($((SECONDS - t_start)) s)"; }

step "GPU"
gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1 || true)
if [ -z "$gpu" ]; then
  if [ $dry = 0 ]; then
    echo "FAIL: no GPU: nvidia-smi is missing or sees no device. (bash scripts/gpu_check.sh --dry-run checks this" \
         "script on CPU.)" >&2
    exit 2
  fi
  gpu="none (dry run on CPU)"
fi
echo "$gpu"
res=${res:-runs/gpu_check/$( [ $dry = 1 ] && echo dry- )$(date +%Y%m%d-%H%M%S)}
mkdir -p "$res"
res=$(cd "$res" && pwd)
echo "results: $res"
status="$res/status.tsv"  # one line per check: name, result, seconds, log
: > "$status"
nvidia-smi > "$res/nvidia-smi.txt" 2>&1 || true

step "environment (.venv by scripts/env.sh; on a GPU machine with torch installed, that torch)"
if [ $dry = 0 ] && [ ! -x .venv/bin/python ] && \
   python3 -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
  python3 -m venv --system-site-packages .venv  # this machine's CUDA torch instead of a download
fi
if bash -c 'source scripts/env.sh' > "$res/setup.log" 2>&1; then
  source scripts/env.sh
elif command -v nbdev_test >/dev/null && \
     PYTHONPATH="$PWD" python3 -c "import torch, pytest, transformers, hybrid_ilrl"; then
  tail -n 5 "$res/setup.log"
  echo "warning: scripts/env.sh could not set up .venv (offline?): using $(command -v python3)," \
       "the repository on PYTHONPATH"
  shim=$(mktemp -d)
  ln -s "$(command -v python3)" "$shim/python"
  export PATH="$shim:$PATH" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  tail -n 20 "$res/setup.log"
  echo "FAIL: no environment: scripts/env.sh failed (log above, $res/setup.log), and python3 has not what the" \
       "checks need (torch, pytest, transformers, nbdev's nbdev_test)" >&2
  exit 1
fi
if [ $dry = 0 ]; then
  unset TRITON_INTERPRET
  python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else f'FAIL: torch {torch.__version__} in \
{sys.prefix} sees no GPU (a CPU build?): remove .venv and rerun, or install a CUDA build of torch there')"
  python -c "import liger_kernel" 2>/dev/null || python -m pip install -q liger-kernel || \
    echo "warning: liger-kernel could not be installed: the Liger rows of the table will say so" >&2
fi
python - <<'EOF' | tee "$res/versions.txt"
import importlib.metadata as md, platform, torch
def v(p):
    try: return md.version(p)
    except md.PackageNotFoundError: return "not installed"
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"triton {v('triton')}, liger-kernel {v('liger-kernel')}")
EOF
if ! python -m "$bench" --help > /dev/null; then
  echo "FAIL: python -m $bench does not run (GPU_CHECK_BENCH names the benchmark module)" >&2
  exit 1
fi

# run_check NAME LOG TIMEOUT CMD...: run CMD with a time limit into LOG; one line in $status
run_check() {
  local name=$1 log=$2 limit=$3 t0=$SECONDS rc=0
  shift 3
  timeout -k 10 "$limit" "$@" > "$log" 2>&1 || rc=$?
  local result=passed
  if [ $rc = 124 ] || [ $rc = 137 ]; then result="TIMED OUT after ${limit} s"
  elif [ $rc != 0 ]; then result="FAILED (exit $rc)"; fi
  printf '%s\t%s\t%s\t%s\n' "$name" "$result" "$((SECONDS - t0))" "$log" >> "$status"
  return $rc
}

step "cuda-flagged notebook cells (nbdev_test --flags cuda) and tests (pytest -m cuda), side by side"
mapfile -t cuda_nbs < <(python - <<'EOF'
import json, re
from pathlib import Path
for p in sorted(Path("nbs").rglob("*.ipynb")):
    if any(x.startswith(("_", ".")) for x in p.relative_to("nbs").parts): continue
    cells = json.loads(p.read_text()).get("cells", [])
    if any(c.get("cell_type") == "code" and re.search(r"^#\|\s*cuda\b", "".join(c.get("source", [])), re.M)
           for c in cells): print(p)
EOF
)
echo "notebooks with #| cuda cells: ${cuda_nbs[*]:-none}"
pids=()
for nb in "${cuda_nbs[@]}"; do
  name=$(basename "$nb" .ipynb)
  if [ $dry = 1 ]; then
    printf '%s\t%s\t0\t-\n' "notebook $name (cuda cells)" "listed, not run (dry run)" >> "$status"
  else
    run_check "notebook $name (cuda cells)" "$res/nb_$name.log" "$test_timeout" nbdev_test --path "$nb" --flags cuda &
    pids+=($!)
  fi
done
if [ $dry = 1 ]; then
  run_check "pytest -m cuda (collected only)" "$res/pytest_cuda.log" "$test_timeout" \
    python -m pytest -m cuda --collect-only -q tests/ &
else
  run_check "pytest -m cuda" "$res/pytest_cuda.log" "$test_timeout" python -m pytest -m cuda -q -rfE tests/ &
fi
pids+=($!)
for p in "${pids[@]}"; do wait "$p" || true; done
while IFS=$'\t' read -r name result secs log; do
  echo "  $name: $result ($secs s)"
  if [ "$result" != passed ] && [ -f "$log" ]; then tail -n 30 "$log" | sed 's/^/    | /'; fi
done < "$status"
echo "  pytest: $(tail -n 1 "$res/pytest_cuda.log")"

if [ $dry = 1 ]; then
  kernel_args=(--device cpu --rows 64 --vocab 1000 --dtype fp32 --repeats 1 --methods eager,ours)
  head_args=(--device cpu --rows 64 --hidden 32 --vocab 1000 --dtype fp32 --repeats 1 --methods unfused,fused)
else
  kernel_args=(--device cuda --rows 16384 --vocab 128256 --dtype bf16 --repeats 5)
  head_args=(--device cuda --rows 8192 --hidden 4096 --vocab 128256 --dtype bf16 --repeats 3)
fi
rm -f "$res"/bench_*.csv  # a table from this run only
step "benchmark: the kernel (python -m $bench kernel ${kernel_args[*]})"
run_check "benchmark: kernel" "$res/bench_kernel.log" "$bench_timeout" \
  python -m "$bench" kernel "${kernel_args[@]}" --out "$res/bench_kernel" || true
tail -n 12 "$res/bench_kernel.log"
step "benchmark: the fused head (python -m $bench fused_linear ${head_args[*]})"
run_check "benchmark: fused head" "$res/bench_fused_linear.log" "$bench_timeout" \
  python -m "$bench" fused_linear "${head_args[@]}" --out "$res/bench_fused_linear" || true
tail -n 12 "$res/bench_fused_linear.log"

step "summary"
GPU="$gpu" SECS=$((SECONDS - t_start)) python - "$res" <<'EOF'
import csv, math, os, sys
from pathlib import Path
res = Path(sys.argv[1])
rows = [l.split("\t") for l in (res / "status.tsv").read_text().splitlines() if l.strip()]
f = lambda x, fmt, unit="": "" if x in (None, "") or math.isnan(float(x)) else format(float(x), fmt) + unit
out = [f"GPU check: {os.environ['GPU']}; {(res / 'versions.txt').read_text().strip()}; {os.environ['SECS']} s in all",
       f"results: {res}", "",
       "| check | result | median (ms) | time ÷ ours | peak memory beyond inputs (GiB) | max grad diff vs ours |",
       "|---|---|---|---|---|---|"]
for name, result, secs, _ in rows:
    out.append(f"| {name} | {result}, {secs} s | | | | |")
    stem = {"benchmark: kernel": "bench_kernel", "benchmark: fused head": "bench_fused_linear"}.get(name)
    if stem is None or not (res / f"{stem}.csv").is_file(): continue
    for r in csv.DictReader(open(res / f"{stem}.csv")):
        H = f", H={int(r['d']):,}" if r.get("d") else ""
        shape = f"N={int(r['N']):,}{H}, V={int(r['V']):,}, {r['dtype']}"
        what = f"{name.split(': ')[1]}: {r['method']} ({shape})"
        if r["note"]: out.append(f"| {what} | {r['note']} | | | | |")
        else: out.append(f"| {what} | ok | {f(float(r['median_s']) * 1e3, '.1f')} | {f(r['ours_speedup'], '.2f', '×')} "
                         f"| {f(float(r['peak_mem_bytes']) / 2**30, '.2f')} | {f(r['grad_diff'], '.1e')} |")
table = "\n".join(out)
(res / "summary.md").write_text(table + "\n")
print(table)
EOF
if grep -q -v -P '\t(passed|listed, not run \(dry run\))\t' "$status"; then
  echo "gpu_check: some checks did not pass (above; logs in $res)" >&2
  exit 1
fi
