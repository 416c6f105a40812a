#!/bin/bash
# Which programs XLA compiles in one short run, per commit (from the repo
# root):
#   bash experiments/startup/compiles.sh DATA_DIR COMMIT...
# Each commit runs python -m cnn_jax.main --config=configs/default.py for 2
# epochs of 1,000 examples, compilation cache off, twice: as on a CPU
# (epoch loop 'python', CPU layers) and as on a GPU (one program per epoch,
# Flax's layers), with JAX_LOG_COMPILES=1. Printed: every XLA compilation
# of 0.1 s or more, in order, and the sum of all of them.
set -euo pipefail
DATA_DIR=$(realpath "$1")
shift
PY=$(pwd)/.venv/bin/python
T=/tmp/startup_compiles
rm -rf $T && mkdir -p $T
for commit in "$@"; do
  git clone -q . $T/$commit && git -C $T/$commit checkout -q $commit
done
for commit in "$@"; do
  for path in cpu gpu; do
    args=()
    [ $path = gpu ] && \
        args=(--config.epoch_loop=scan --config.model.layers=flax)
    (cd $T/$commit && JAX_LOG_COMPILES=1 $PY -m cnn_jax.main \
        --config=configs/default.py --workdir=$T/runs/${commit}_$path \
        --config.num_epochs=2 --config.data.num_train_examples=1000 \
        --config.data.data_dir="$DATA_DIR" --compilation_cache= "${args[@]}" \
        > $T/${commit}_$path.log 2>&1)
    $PY - $T/${commit}_$path.log "$commit" $path <<'PYEOF'
import re, sys
log, commit, path = sys.argv[1:]
found = re.findall(r'Finished XLA compilation of (\S+) in ([0-9.]+) sec',
                   open(log).read())
big = [f'{name} {float(s):.2f}' for name, s in found if float(s) >= 0.1]
total = sum(float(s) for _, s in found)
print(f'{commit} {path}: {len(found)} compilations, {total:.1f} s in all; '
      f'>= 0.1 s: {", ".join(big)}')
PYEOF
  done
done
