#!/bin/bash
# Start-up of a process, two commits alternating (from the repo root):
#   bash experiments/startup/measure.sh BEFORE AFTER DATA_DIR [ROUNDS]
# Per round, for each commit:
#   - `import cnn_jax.main`, a fresh process, launch to exit, 5 times;
#   - python -m cnn_jax.main --config=configs/fast.py
#     --config.target_test_accuracy=0.9, launch to exit, data prepared and
#     cached in DATA_DIR beforehand, compilation cache off (a first run).
# Uses this checkout's .venv for both (so the same packages, PyTorch
# included, are installed for both).
set -euo pipefail
BEFORE=$1 AFTER=$2 DATA_DIR=$(realpath "$3") ROUNDS=${4:-3}
PY=$(pwd)/.venv/bin/python
T=/tmp/startup_measure
rm -rf $T && mkdir -p $T
for commit in $BEFORE $AFTER; do
  git clone -q . $T/$commit && git -C $T/$commit checkout -q $commit
done
seconds() { echo "$(date +%s.%N) - $1" | bc; }
for round in $(seq "$ROUNDS"); do
  for commit in $BEFORE $AFTER; do
    times=()
    for _ in 1 2 3 4 5; do
      start=$(date +%s.%N)
      (cd $T/$commit && $PY -c 'import cnn_jax.main')
      times+=("$(seconds "$start")")
    done
    echo "round $round, $commit: import cnn_jax.main: ${times[*]} s"
  done
  for commit in $BEFORE $AFTER; do
    start=$(date +%s.%N)
    (cd $T/$commit && $PY -m cnn_jax.main --config=configs/fast.py \
        --workdir=$T/runs/${commit}_$round --config.target_test_accuracy=0.9 \
        --config.data.data_dir="$DATA_DIR" --compilation_cache= \
        > $T/${commit}_$round.log 2>&1)
    took=$(seconds "$start")
    epoch=$($PY -c "import json, sys
print(json.load(open(sys.argv[1]))['target_epoch'])" \
        "$T/runs/${commit}_$round/summary.json")
    echo "round $round, $commit: time to 90%: $took s (epoch $epoch)"
  done
done
