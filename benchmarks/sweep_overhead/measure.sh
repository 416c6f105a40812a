#!/bin/bash
# Times the four-point sweep (four_points.py: one epoch of 1,024 examples
# per point) as whole processes, on the code before this change (aff116b)
# and after it (a clone of HEAD), alternating, two rounds.
#   bash benchmarks/sweep_overhead/measure.sh DATA_DIR   # from the repo root
# DATA_DIR: a TFDS data_dir where fashion_mnist is prepared and cached.
set -euo pipefail
DATA_DIR=$(realpath "$1")
SPEC=$(realpath benchmarks/sweep_overhead/four_points.py)
PY=$(pwd)/.venv/bin/python
T=/tmp/sweep_overhead
rm -rf $T && mkdir -p $T
git clone -q . $T/before && git -C $T/before checkout -q aff116b
git clone -q . $T/after
sweep() {  # code, workdir, extra flags
  local start=$(date +%s.%N)
  (cd $T/$1 && $PY -m cnn_jax.sweep --config=$SPEC --workdir=$T/runs/$2 \
      --config.data.data_dir=$DATA_DIR "${@:3}" > $T/$2.log 2>&1)
  echo "$2: $(echo "$(date +%s.%N) - $start" | bc) s for 4 points"
}
for round in 1 2; do
  sweep before before_$round
  # A new cache folder in round 1: every program compiles once.
  [ $round = 1 ] && rm -rf $T/cache
  sweep after after_$round --compilation_cache=$T/cache
done
