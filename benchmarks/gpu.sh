#!/usr/bin/env bash
# The whole GPU sequence in one call, on a bare machine with no network (the device image: Python 3.12,
# torch 2.11 cu130, triton 3.6, cupy-cuda13x, nvcc 13):
#   1. install this checkout in place (no dependencies, no build isolation: nothing is downloaded);
#   2. build csrc/ (the CUDA Jacobi eigensolver) in place for sm_90 with the image's nvcc;
#   3. run the GPU tests (pytest -m gpu);
#   4. artent bench --quick --device cuda --out "$OUT" (report.md, results.json, figures).
# Usage: benchmarks/gpu.sh [OUT_DIR] [extra artent bench args...]   (OUT_DIR default: $OUT, else ./gpu_out)
# Environment: PYTHON (default python3), ARTENT_FAST_CUDA_ARCH (default sm_90), BENCH_ARGS (default --quick).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-gpu_out}}"
shift || true
PY="${PYTHON:-python3}"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu.log"
export PYTHONUNBUFFERED=1
status=0
step() { echo; echo "=== $* ($(date +%T))" | tee -a "$LOG"; }

step "machine"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nvcc --version | tail -2;
  "$PY" -c "import sys, torch, triton; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"; } 2>&1 | tee -a "$LOG"

step "install (no deps, no build isolation)"
"$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e . 2>&1 | tail -5 | tee -a "$LOG"
"$PY" -c "import artent_fast, artent_fast.kernels, artent_fast.bench" 2>&1 | tee -a "$LOG" || {
  echo "artent_fast is not importable after the install: stopping" | tee -a "$LOG"; exit 1; }

step "build csrc/ in place (${ARTENT_FAST_CUDA_ARCH:-sm_90})"
"$PY" csrc/build.py artent_fast 2>&1 | tee -a "$LOG" || status=1
"$PY" -c "from artent_fast.backends import registry as r; print('backends:', r.available_backends(), r.load_errors())" 2>&1 | tee -a "$LOG"

step "pytest -m gpu"
timeout "${PYTEST_TIMEOUT:-150}" "$PY" -m pytest -m gpu -q -p no:cacheprovider -rs tests 2>&1 | tee "$OUT_DIR/pytest_gpu.log" | tail -40 >> "$LOG" || status=1
tail -5 "$OUT_DIR/pytest_gpu.log"

step "artent bench ${BENCH_ARGS:---quick} --device cuda"
timeout "${BENCH_TIMEOUT:-300}" "$PY" -m artent_fast.cli bench ${BENCH_ARGS:---quick} --device cuda --out "$OUT_DIR" "$@" 2>&1 | tee -a "$LOG" \
  || status=1
step "done (status $status)"
exit $status
