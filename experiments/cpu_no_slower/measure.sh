#!/bin/bash
# Whole-process time to 90% test accuracy on the CPU, the code before issue
# #11's changes (aff116b) against a clone of HEAD, alternating, three rounds:
#   bash experiments/cpu_no_slower/measure.sh DATA_DIR   # from the repo root
# Each run: python -m cnn_jax.main --config=configs/fast.py
# --config.target_test_accuracy=0.9, launch to exit, data prepared and cached
# in DATA_DIR beforehand; HEAD runs with its compilation cache off (a first
# run, as the old code always was).
set -euo pipefail
DATA_DIR=$(realpath "$1")
PY=$(pwd)/.venv/bin/python
T=/tmp/cpu_no_slower
rm -rf $T && mkdir -p $T
git clone -q . $T/before && git -C $T/before checkout -q aff116b
git clone -q . $T/after
run() {  # code, round, extra flags
  local start=$(date +%s.%N)
  (cd $T/$1 && $PY -m cnn_jax.main --config=configs/fast.py \
      --workdir=$T/runs/$1_$2 --config.target_test_accuracy=0.9 \
      --config.data.data_dir=$DATA_DIR "${@:3}" > $T/$1_$2.log 2>&1)
  local seconds=$(echo "$(date +%s.%N) - $start" | bc)
  local epochs=$($PY -c "import json; print(json.load(open('$T/runs/$1_$2/summary.json'))['target_epoch'])")
  echo "$1 round $2: $seconds s, target reached at epoch $epochs"
}
for round in 1 2 3; do
  run before $round
  run after $round --compilation_cache=
done
