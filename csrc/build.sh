#!/usr/bin/env bash
# Build the CUDA eigensolver extension standalone: csrc/build.sh [OUT_DIR] [--arch sm_90]
# (default OUT_DIR: artent_fast/, where artent_fast.backends.cuda_ops finds it).
set -euo pipefail
exec "${PYTHON:-python}" "$(dirname "$0")/build.py" "$@"
