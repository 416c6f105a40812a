#!/usr/bin/env bash
# One call on a lent GPU machine: the full-length (20-epoch) ablation sweeps
# and the default recipe over 3 seeds, under a deadline, results to $OUT.
# A record of the run at commit 9d5497e: later code also needs the
# tensorboardX wheel; scripts/gpu_carry.sh and scripts/gpu_lease.sh are the
# current way to run on such a machine.
#
# The machine has JAX with CUDA but no TensorFlow, TFDS or ml_collections, so
# the caller carries ml_collections as a wheel (.whl/) and the decoded-split
# cache that cnn_jax.input_pipeline writes after TFDS has prepared and
# verified the data (.gpu/tfds/fashion_mnist/3.0.1/cnn_jax_{train,test}.npz).
# Every sweep resumes, so a run cut off by the deadline keeps its finished
# points. Usage (repo root): OUT=DIR DEADLINE_S=560 bash experiments/gpu_session/run.sh
set -uo pipefail
OUT=${OUT:?}
END=$(( $(date +%s) + ${DEADLINE_S:-560} ))
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
W=/tmp/runs
DATA="--config.data.data_dir=$PWD/.gpu/tfds"
nvidia-smi -L
python3 -c 'import jax, flax, optax; print(jax.__version__, flax.__version__, optax.__version__, jax.devices())'

step() {  # step NAME SWEEP_CONFIG [FLAGS...]: one sweep, cut at the deadline.
  local name=$1 config=$2; shift 2
  local left=$(( END - $(date +%s) - 15 ))
  if (( left < 20 )); then echo "skipped $name: deadline"; return; fi
  local t0=$(date +%s)
  timeout "$left" python3 -m cnn_jax.sweep --config="$config" \
      --workdir="$W/$name" $DATA "$@" > "$W/$name.log" 2>&1
  echo "$name: exit $? after $(( $(date +%s) - t0 )) s"
  tail -n 3 "$W/$name.log"
}

mkdir -p "$W"
step activation_pooling configs/sweeps/activation_pooling.py
step batch_norm configs/sweeps/batch_norm.py
# The seeds' step also runs the shard_map path on the GPU once.
step default_seeds configs/sweeps/seeds.py --config.parallelism=shard_map
# What the runs wrote, without their checkpoints.
tar czf "$OUT/runs.tar.gz" --exclude=checkpoints -C "$W" .
ls -la "$OUT"
