#!/usr/bin/env bash
# The full test suite (offline, CPU): lint, then pytest. Arguments go to pytest.
# --kernel-paths (first argument; CI passes it): then the numerics tests (`-m numerics`: two computations of the
# same math compared) run twice more, on other kernels of the same CPU: capped to AVX2, and on one thread.
set -euo pipefail
cd "$(dirname "$0")/.."
kernel_paths=false
if [ "${1:-}" = "--kernel-paths" ]; then
  kernel_paths=true
  shift
fi
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
if $kernel_paths; then
  echo "numerics tests again, the CPU capped to AVX2 (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS)"
  ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
    .venv/bin/python -m pytest -q -m numerics "$@"
  echo "numerics tests again, on one thread (OMP_NUM_THREADS=1)"
  OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q -m numerics "$@"
fi
