#!/bin/bash
# Checks the project on a GPU (or TPU) in a few minutes and writes what it
# measured to one folder:
#
#   bash scripts/gpu_check.sh [OUT]      # from the repo root
#
#   OUT/devices.txt     what JAX and PyTorch see
#   OUT/tests.txt       the backend-independent tests, run on the accelerator
#   OUT/benchmark/      python -m cnn_jax.benchmark: JAX and PyTorch (eager,
#                       torch.compile) on the same device
#   OUT/default/        configs/default.py, 20 epochs, timed as a process
#   OUT/timings.txt     each step's wall time
#   OUT/sweep/          with SWEEP=1: the 36-run activation x pooling sweep
#
# Needs the project installed with the accelerator's JAX (pip install -e
# '.[cuda13,test,bench]'), the four Fashion-MNIST .gz files in MANUAL_DIR
# (default ../shared/data/fashion_mnist; PyTorch reads them), and the dataset
# prepared by TFDS in DATA_DIR, or only its decoded-split cache
# (DATA_DIR/fashion_mnist/3.0.1/cnn_jax_{train,test}.npz) where TensorFlow is
# not installed. BENCH_ARGS and RUN_ARGS add flags, e.g. to shrink a trial
# run on a CPU.
set -uo pipefail
OUT=${1:-gpu_check/$(date +%Y%m%d-%H%M%S)}
MANUAL_DIR=${MANUAL_DIR:-$(realpath ../shared/data/fashion_mnist)}
DATA_DIR=${DATA_DIR:-}
PY=${PY:-python}
mkdir -p "$OUT"
OUT=$(realpath "$OUT")
status=0

step() {  # name, command...: runs it, logs to OUT/name.log, times it
  local name=$1; shift
  local start=$(date +%s.%N)
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  printf '%-10s rc=%d %7.1f s\n' "$name" $rc \
      "$(echo "$(date +%s.%N) - $start" | bc)" | tee -a "$OUT/timings.txt"
  [ $rc = 0 ] || status=1
}

$PY - > "$OUT/devices.txt" 2>&1 <<'PYEOF'
import jax
print('jax', jax.__version__, jax.default_backend(), jax.devices())
try:
  import torch
  print('torch', torch.__version__, 'cuda', torch.cuda.is_available())
except ImportError:
  print('torch not installed')
PYEOF
echo "commit $(git rev-parse HEAD 2>/dev/null || echo "${CNN_JAX_GIT_COMMIT:-unknown}")" >> "$OUT/devices.txt"

# Tests that hold on any backend and one device: the layers (both sets),
# the pools, the model, the registry, the scanned epoch against the loop.
# (The rest of the suite assumes the two CPU devices conftest.py forces.)
step tests env CNN_JAX_MANUAL_DIR="$MANUAL_DIR" $PY -m pytest -p no:cacheprovider \
    tests/layers_test.py tests/pooling_test.py tests/registry_test.py \
    tests/models_test.py \
    "tests/train_test.py::test_the_scanned_epoch_takes_the_loops_parameters" \
    -k "not over_the_mapped_axis"
cp "$OUT/tests.log" "$OUT/tests.txt"

step benchmark $PY -m cnn_jax.benchmark --workdir="$OUT/benchmark" \
    --manual_dir="$MANUAL_DIR" --data_dir="$DATA_DIR" ${BENCH_ARGS:-}

step default $PY -m cnn_jax.main --config=configs/default.py \
    --workdir="$OUT/default" --config.data.data_dir="$DATA_DIR" \
    --start_over ${RUN_ARGS:-}

if [ "${SWEEP:-0}" = 1 ]; then
  step sweep $PY -m cnn_jax.sweep \
      --config=configs/sweeps/activation_pooling.py --workdir="$OUT/sweep/runs" \
      --config.data.data_dir="$DATA_DIR" ${RUN_ARGS:-}
fi
echo "wrote $OUT"
exit $status
