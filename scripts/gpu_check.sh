#!/bin/bash
# Checks the project on a GPU (or TPU) in a few minutes and writes what it
# measured to one folder:
#
#   bash scripts/gpu_check.sh [OUT]      # from the repo root
#
#   OUT/devices.txt     what JAX and PyTorch see, and the commit
#   OUT/benchmark/      python -m cnn_jax.benchmark: JAX and PyTorch (eager,
#                       torch.compile) on the same device
#   OUT/default/        configs/default.py, 20 epochs, timed as a process
#   OUT/sweep/          step sweep: the 36-run activation x pooling sweep
#   OUT/tests.log       the backend-independent tests, run on the accelerator
#   OUT/timings.txt     each step's exit status and wall time
#   OUT/<step>.log      each step's output
#
# STEPS picks the steps, run in this order: benchmark, default, sweep,
# tests (default: all but sweep). The measurements come before the tests, so
# that a deadline (DEADLINE_S: seconds for the whole script; each step is
# cut at it) takes the least useful part. SWEEP_LIMIT_S cuts the sweep
# sooner: past its 90 s target, its time says only that it missed, and the
# tests after it keep theirs. Needs the project installed with the
# accelerator's JAX (pip install -e '.[cuda13,test,bench]'), the four
# Fashion-MNIST .gz files in MANUAL_DIR (default ../shared/data/fashion_mnist;
# PyTorch reads them), and the dataset prepared by TFDS in DATA_DIR, or only
# its decoded-split cache (DATA_DIR/fashion_mnist/3.0.1/cnn_jax_{train,test}.npz)
# where TensorFlow is not installed. BENCH_ARGS and RUN_ARGS add flags, e.g.
# to shrink a trial run on a CPU.
#
# An offline host (no network, no TensorFlow): copy the repo there with the
# .whl/ and .gpu/ folders that `make offline-bundle` writes. The script then
# installs .whl/'s wheels into a scratch folder (scripts/gpu_site.sh), reads
# the data from .gpu/tfds unless DATA_DIR is set, and, where MANUAL_DIR lacks
# the .gz files, rebuilds them from that cache for PyTorch
# (scripts/idx_from_cache.py).
set -uo pipefail
OUT=${1:-workdirs/gpu_check/$(date +%Y%m%d-%H%M%S)}
MANUAL_DIR=${MANUAL_DIR:-$(realpath -m ../shared/data/fashion_mnist)}
DATA_DIR=${DATA_DIR:-}
PY=${PY:-python3}
STEPS=${STEPS:-benchmark default tests}
if [[ -n ${SWEEP_LIMIT_S:-} && ! ${SWEEP_LIMIT_S} =~ ^[1-9][0-9]*$ ]]; then
  echo "error: SWEEP_LIMIT_S: a whole number of seconds > 0; got '$SWEEP_LIMIT_S'" >&2
  exit 2
fi
for name in $STEPS; do
  case $name in benchmark|default|sweep|tests) ;;
    *) echo "error: STEPS: unknown step '$name'; allowed: benchmark default sweep tests" >&2
       exit 2 ;;
  esac
done
END=$(( $(date +%s) + ${DEADLINE_S:-0} ))
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
OUT=$(realpath "$OUT")

# What `make offline-bundle` brought, if anything.
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
source scripts/gpu_site.sh
if [ -z "$DATA_DIR" ] && [ -d .gpu/tfds ]; then DATA_DIR=$PWD/.gpu/tfds; fi
if [ ! -f "$MANUAL_DIR/train-images-idx3-ubyte.gz" ] && [ -n "$DATA_DIR" ]; then
  $PY scripts/idx_from_cache.py "$DATA_DIR" "$W/idx" > /dev/null \
      && MANUAL_DIR=$W/idx
fi
status=0

step() {  # name, limit (s, or ''), command...: runs it (until the limit or
          # the deadline), logs, times it
  local name=$1 left=$2; shift 2
  [[ " $STEPS " == *" $name "* ]] || return 0
  local limit=()
  if [ -n "${DEADLINE_S:-}" ]; then
    local to_deadline=$(( END - $(date +%s) ))
    if (( to_deadline < 20 )); then
      echo "$name skipped: deadline" | tee -a "$OUT/timings.txt"; status=1
      return
    fi
    if [ -z "$left" ] || (( to_deadline < left )); then left=$to_deadline; fi
  fi
  [ -n "$left" ] && limit=(timeout -k 15 "$left")
  local start=$(date +%s.%N)
  ${limit[@]+"${limit[@]}"} "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  awk -v n="$name" -v rc=$rc -v a="$start" -v b="$(date +%s.%N)" \
      'BEGIN { printf "%-10s rc=%d %7.1f s\n", n, rc, b - a }' \
      | tee -a "$OUT/timings.txt"
  [ $rc = 0 ] || status=1
}

# Bounded: a new GPU stack can hang at start-up, and nothing else has a
# deadline yet.
timeout -k 5 120 $PY - > "$OUT/devices.txt" 2>&1 <<'PYEOF'
import sys
import jax
import flax
print('python', sys.version.split()[0])
print('jax', jax.__version__, jax.default_backend(), jax.devices())
print('flax', flax.__version__)
try:
  import torch
  print('torch', torch.__version__, 'cuda', torch.cuda.is_available())
except ImportError:
  print('torch not installed')
PYEOF
echo "commit ${CNN_JAX_GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}" \
    >> "$OUT/devices.txt"

# PyTorch and a second JAX process (the time-to-target run) share the device
# with the benchmark's own JAX process: each JAX process may take at most
# 30% of its memory (claimed as needed: cnn_jax/__init__.py).
step benchmark '' env XLA_PYTHON_CLIENT_MEM_FRACTION=.3 \
    $PY -m cnn_jax.benchmark --workdir="$OUT/benchmark" \
    --manual_dir="$MANUAL_DIR" --data_dir="$DATA_DIR" ${BENCH_ARGS:-}

# The run's and the sweep's logs name every program XLA compiles and how
# long it took on this device (JAX_LOG_COMPILES): where a run's fixed time
# goes.
step default '' env JAX_LOG_COMPILES=1 $PY -m cnn_jax.main \
    --config=configs/default.py --workdir="$OUT/default" \
    --config.data.data_dir="$DATA_DIR" --start_over ${RUN_ARGS:-}

step sweep "${SWEEP_LIMIT_S:-}" env JAX_LOG_COMPILES=1 $PY -m cnn_jax.sweep \
    --config=configs/sweeps/activation_pooling.py --workdir="$OUT/sweep/runs" \
    --config.data.data_dir="$DATA_DIR" ${RUN_ARGS:-}

# Tests that hold on any backend and one device: the layers (both sets),
# the pools, the model, the registry, the scanned epoch against the loop.
# (The rest of the suite assumes the two CPU devices conftest.py forces.)
# They compare computations at float32 tolerances, so matmuls and convs run
# at full float32 precision, not the TF32 JAX uses by default on recent
# NVIDIA GPUs.
step tests '' env CNN_JAX_MANUAL_DIR="$MANUAL_DIR" \
    JAX_DEFAULT_MATMUL_PRECISION=highest $PY -m pytest -p no:cacheprovider \
    tests/layers_test.py tests/pooling_test.py tests/registry_test.py \
    tests/models_test.py \
    "tests/train_test.py::test_the_scanned_epoch_takes_the_loops_parameters" \
    -k "not over_the_mapped_axis"
echo "wrote $OUT"
exit $status
