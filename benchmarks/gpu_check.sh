#!/usr/bin/env bash
# The CUDA check of issue 28 (item 4), one prepared script: the CUDA tests, then the training step (img/s) and
# batch-1 latency of plain, reference CBAM and compiled reference CBAM (torch.compile, as train.compile) ResNets,
# resnet50 at 3x224x224 (batch 8) and resnet20 at 1x28x28 (batch 128), bf16 autocast + channels_last (and the
# mode `cbamlab train` picks there, when it differs), medians of 7 interleaved repeats: one markdown table
# (benchmarks/bench_attention.py), written to $OUT (or runs/gpu_check) and printed.
#
#   bash benchmarks/gpu_check.sh              # on a CUDA machine, from the repo root (a few minutes)
#   bash benchmarks/gpu_check.sh --dry-run    # anywhere: CPU, tiny sizes, 1 repeat, torch.compile tracing
#                                             # alone (its eager backend); checks the script itself (~1 min)
#   bash benchmarks/gpu_check.sh --repeats 9  # further arguments go to bench_attention.py
#
# Python: .venv's where it exists; else a python3 that already has torch (a prepared GPU image: the checkout is
# put on PYTHONPATH, nothing is installed); else a new .venv with `pip install -e '.[dev,bench]'`.
# VENV=none skips .venv (a checkout whose .venv has a CPU-only torch, on a GPU image).
# Each part has its own time limit (TEST_TIMEOUT, BENCH_TIMEOUT seconds); a failed part does not stop the next,
# and the script exits non-zero when any part failed.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
VENV=${VENV:-.venv}
TEST_TIMEOUT=${TEST_TIMEOUT:-240}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-420}
INSTALL_TIMEOUT=${INSTALL_TIMEOUT:-600}
RESULTS=${OUT:-runs/gpu_check}
export PYTHONUNBUFFERED=1
failed=()

if [[ -x $VENV/bin/python ]]; then
  PY=$VENV/bin/python
elif python3 -c "import torch" 2>/dev/null; then
  PY=python3
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
else
  python3 -m venv "$VENV"
  PY=$VENV/bin/python
  timeout "$INSTALL_TIMEOUT" "$PY" -m pip install -q -e '.[dev,bench]'
fi
echo "python: $PY ($("$PY" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__)'))"

if [[ $DRY == 1 ]]; then
  DEVICE=cpu
  # torch.compile's eager backend traces (dynamo) without compiling: seconds instead of minutes on a CPU
  BENCH_ARGS=(--quick --only resnet20 --modes bf16 --batch 2 --image-size 8 --threads 1 --compile-backend eager)
else
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'error: no CUDA device here')"
  DEVICE=cuda
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  BENCH_ARGS=(--only resnet50@224,resnet20 --modes bf16_channels_last,default --steps 10)
fi

echo "== part 1: the CUDA tests (pytest -k cuda; they skip without a CUDA device)"
mapfile -t cuda_files < <(grep -l "torch.cuda.is_available" tests/test_*.py)
rc=0
timeout "$TEST_TIMEOUT" "$PY" -m pytest -q -rs -k cuda "${cuda_files[@]}" || rc=$?
case $rc in
  0) ;;
  5) echo "no CUDA test was collected" ;;
  124) failed+=("tests (over ${TEST_TIMEOUT} s)") ;;
  *) failed+=("tests (exit $rc)") ;;
esac

echo "== part 2: plain, reference CBAM and compiled reference CBAM, training img/s and batch-1 latency"
rc=0
timeout "$BENCH_TIMEOUT" "$PY" benchmarks/bench_attention.py --device "$DEVICE" \
  --variants plain,cbam_reference,cbam_reference_compiled --out "$RESULTS" "${BENCH_ARGS[@]}" "$@" || rc=$?
case $rc in
  0) ;;
  124) failed+=("benchmark (over ${BENCH_TIMEOUT} s)") ;;
  *) failed+=("benchmark (exit $rc)") ;;
esac

if (( ${#failed[@]} )); then
  echo "gpu_check: FAILED: ${failed[*]}"
  exit 1
fi
echo "gpu_check: all parts passed; table in $RESULTS/bench_attention.md"
