#!/bin/bash
# One run compiling its programs ahead in a thread, against one compiling
# them in its main thread, on this CPU: configs/default.py shrunk to one
# epoch of 1,000 examples, each with a fresh compilation cache, alternating
# (from the repo root; DATA_DIR: a prepared TFDS data_dir):
#
#   bash benchmarks/compile_ahead/cpu_runs.sh DATA_DIR [ROUNDS]
#
# It ran at 9c7c4a3; main has had no --compile_ahead since a single run
# gained nothing from it on a GPU either (README.md here): run it in a
# checkout of 9c7c4a3-55d2fdf.
set -uo pipefail
DATA_DIR=$(realpath "$1")
PY=${PY:-.venv/bin/python}
W=${WORK:-/tmp/compile_ahead_cpu}
for round in $(seq "${2:-3}"); do
  for ahead in false true; do
    rm -rf "$W/$ahead"
    a=$(date +%s.%N)
    $PY -m cnn_jax.main --config=configs/default.py --workdir="$W/$ahead/run" \
        --config.num_epochs=1 --config.data.num_train_examples=1000 \
        --config.data.data_dir="$DATA_DIR" \
        --compilation_cache="$W/$ahead/cache" --compile_ahead=$ahead \
        > "$W/$ahead.log" 2>&1
    rc=$? b=$(date +%s.%N)
    inproc=$($PY -c "import json,sys
print('%.2f' % json.load(open(sys.argv[1]))['wall_time_s'])" \
        "$W/$ahead/run/summary.json" 2>/dev/null || echo -)
    awk -v r=$round -v n=$ahead -v rc=$rc -v a="$a" -v b="$b" -v i="$inproc" \
        'BEGIN { printf "round %d compile_ahead=%-5s rc=%d %6.2f s launch to exit; %s s in process\n", r, n, rc, b - a, i }'
  done
done
