#!/bin/bash
# measure.py on three commits, alternating, two rounds, for 3 runs (a sweep
# point's seeds) x 20 epochs, with pauses of 0 and 0.2 s (a GPU epoch):
#   b0a5e44  before: tensorboardX's SummaryWriter, a checkpoint every epoch
#   fc3122e  events written synchronously, one event per step
#   AFTER    and checkpoints every config.checkpoint_interval_s (default HEAD)
#   bash experiments/epoch_overhead/measure.sh [AFTER]   # from the repo root
# COMMITS='A B ...' measures those commits instead.
set -euo pipefail
AFTER=${1:-HEAD}
COMMITS=${COMMITS:-b0a5e44 fc3122e $AFTER}
SCRIPT=$(realpath experiments/epoch_overhead/measure.py)
PY=$(pwd)/.venv/bin/python
T=/tmp/epoch_overhead
rm -rf $T && mkdir -p $T
for commit in $COMMITS; do
  git clone -q . $T/$commit && git -C $T/$commit checkout -q $commit
done
for round in 1 2; do
  for pause in 0 0.2; do
    for commit in $COMMITS; do
      echo -n "round $round, $commit: "
      (cd $T/$commit && $PY $SCRIPT --runs=3 --epochs=20 \
          --device_s=$pause 2>/dev/null)
    done
  done
done
