#!/bin/bash
# scripts/gpu_lease.sh on this CPU, as the lent GPU machine would run it,
# before spending device time on it (make gpu-carry first):
#
#   bash scripts/gpu_lease_dry_run.sh [DIR]     # default /tmp/gpu_lease_dry_run
#
# VENV (default .venv) picks the Python: e.g. a Python 3.12 venv, as on the
# GPU image, with STEPS='default sweep tests' where it lacks PyTorch.
#
# DIR/repo gets the committed tree (git archive HEAD) plus .whl/ and .gpu/,
# as the device tool sends them; TensorFlow, TFDS and ml_collections are
# made unimportable except through the carried wheel (the GPU image has
# tensorboard and PyTorch, so they stay importable); the benchmark, the
# default run and the sweep are shrunk to minutes (the sweep, one run at a
# time on a CPU, gets SWEEP_LIMIT_S=900 instead of the lease's 120). It
# fails unless every step exited 0 and what would come back ($OUT =
# DIR/out) fits the tool's limits. What it cannot see: torch.compile, which
# the benchmark runs on a GPU only; the GPU image's JAX 0.11 only under a
# VENV that has it (README, "On this workplace's lent GPU machine").
set -euo pipefail
DIR=$(realpath -m "${1:-/tmp/gpu_lease_dry_run}")
ROOT=$(git rev-parse --show-toplevel)
VENV=$(realpath "${VENV:-$ROOT/.venv}")
[ -d "$ROOT/.whl" ] && [ -d "$ROOT/.gpu" ] || {
  echo 'error: .whl/ and .gpu/ are missing: run make gpu-carry first' >&2
  exit 2
}
if [ -e "$DIR" ] && [ ! -e "$DIR/.gpu_lease_dry_run" ]; then
  echo "error: DIR: $DIR exists and is not an earlier dry run's folder" >&2
  exit 2
fi
rm -rf "$DIR"
mkdir -p "$DIR/repo" "$DIR/out" "$DIR/block"
touch "$DIR/.gpu_lease_dry_run"
git -C "$ROOT" archive HEAD | tar -x -f - -C "$DIR/repo"
cp -r "$ROOT/.whl" "$ROOT/.gpu" "$DIR/repo/"
du -sh "$DIR/repo"  # What travels; the device tool takes at most 64 MiB.
for m in tensorflow tensorflow_datasets ml_collections; do
  mkdir -p "$DIR/block/$m"
  echo "raise ImportError('$m: not on the GPU image')" \
      > "$DIR/block/$m/__init__.py"
done

cd "$DIR/repo"
rc=0
PATH=$VENV/bin:$PATH PYTHONPATH=$DIR/block OUT=$DIR/out \
    WORK=$DIR/gpu_check SITE=$DIR/site DEADLINE_S=${DEADLINE_S:-1800} \
    SWEEP_LIMIT_S=${SWEEP_LIMIT_S:-900} \
    CNN_JAX_GIT_COMMIT=$(git -C "$ROOT" rev-parse HEAD) \
    BENCH_ARGS='--steps=5 --repeats=1 --rounds=1 --target=0.5 --num_seeds=2 --seed_epochs=1' \
    RUN_ARGS='--config.num_epochs=1 --config.data.num_train_examples=2000' \
    bash scripts/gpu_lease.sh || rc=$?
ls -la "$DIR/out"
# The device tool returns at most 8 files, 16 MiB each, two folders down,
# named in letters, digits, '.', '_' and '-'.
files=$(cd "$DIR/out" && find . -type f)
if (( $(echo "$files" | wc -l) > 8 )) || echo "$files" | grep -q '/.*/.*/.*/' \
    || echo "$files" | sed 's|^\./||' | grep -q '[^A-Za-z0-9._/-]' \
    || [ -n "$(find "$DIR/out" -type f -size +16M)" ]; then
  echo "error: what \$OUT holds would not all come back" >&2
  rc=1
fi
exit $rc
