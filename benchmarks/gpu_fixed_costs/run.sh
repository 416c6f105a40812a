#!/bin/bash
# A run's fixed seconds on a GPU host, cold and warm, whole processes one
# after another (from the repo root, with .whl/ and .gpu/ from
# `make offline-bundle`):
#
#   OUT=DIR CNN_JAX_GIT_COMMIT=<commit> bash benchmarks/gpu_fixed_costs/run.sh
#
# Writes $OUT/times.txt (each process: exit status, launch-to-exit seconds,
# and the in-process seconds summary.json records), $OUT/phases*.txt
# (phases.py, as is and without JAX's GPU memory preallocation: "_nopre"
# runs) and $OUT/logs.tar.gz. "cold": a fresh compilation cache;
# "warm": the same command again, its programs read from that cache.
# The "_ahead" runs (main's --compile_ahead=true; the others passed false)
# ran at 55d2fdf; main lost the flag after (docs/performance.md).
# RUN_ARGS shrinks the runs for a trial on a CPU, TORCH_DEVICE=none skips
# PyTorch there; PY picks the Python; RUNS (names, space-separated; "phases"
# for phases.py) runs only those.
set -uo pipefail
: "${OUT:?OUT: the folder whose files come back}"
PY=${PY:-python3}
W=${WORK:-/tmp/gpu_fixed_costs}
rm -rf "$W" && mkdir -p "$W"
source scripts/gpu_site.sh
DATA=$PWD/.gpu/tfds
$PY scripts/idx_from_cache.py "$DATA" "$W/idx" > /dev/null || exit 1
echo "commit ${CNN_JAX_GIT_COMMIT:-unknown}" > "$OUT/times.txt"

wanted() { [ -z "${RUNS:-}" ] || [[ " $RUNS " == *" $1 "* ]]; }
timed() {  # name, command...: one process, bounded, logged, timed
  local name=$1; shift
  wanted "$name" || return 0
  local a=$(date +%s.%N)
  timeout -k 5 90 "$@" > "$W/$name.log" 2>&1
  local rc=$? b=$(date +%s.%N) inproc=-
  if [ -f "$W/$name/summary.json" ]; then
    inproc=$($PY -c "import json,sys; s=json.load(open(sys.argv[1]))
print('%.2f s in process (wall_time_s), time_to_target_s %s' % (
    s['wall_time_s'], s.get('time_to_target_s')))" "$W/$name/summary.json")
  fi
  awk -v n="$name" -v rc=$rc -v a="$a" -v b="$b" -v i="$inproc" \
      'BEGIN { printf "%-19s rc=%d %6.2f s launch to exit; %s\n",
               n, rc, b - a, i }' \
      | tee -a "$OUT/times.txt"
}
main() {  # name, cache folder ('' = off), config file, args...
  local name=$1 cache=$2 config=$3; shift 3
  timed "$name" env ${RUN_ENV:-} $PY -m cnn_jax.main --config="$config" \
      --workdir="$W/$name" \
      --config.data.data_dir="$DATA" --compilation_cache="$cache" \
      "$@" ${RUN_ARGS:-}
}

wanted phases && timeout -k 5 60 env XLA_PYTHON_CLIENT_PREALLOCATE=true \
    $PY benchmarks/gpu_fixed_costs/phases.py "$DATA" > "$OUT/phases.txt" 2>&1
# JAX takes 75% of the GPU's memory at its first operation (its default
# preallocation). The first transfer, the training data's, took 2.14 s on
# an H200 at 4babcaa (phases.txt): is the preallocation most of it?
# Measured at 55d2fdf: yes. Since, importing cnn_jax sets this unless the
# variable is set, so the runs without "_nopre" skip the preallocation too,
# except phases.py's first, which asks for it.
NOPRE=XLA_PYTHON_CLIENT_PREALLOCATE=false
wanted phases && timeout -k 5 60 env $NOPRE $PY \
    benchmarks/gpu_fixed_costs/phases.py "$DATA" > "$OUT/phases_nopre.txt" 2>&1
main default_cold "$W/cache" configs/default.py
RUN_ENV=JAX_LOG_COMPILES=1 main default_logged "$W/cache_logged" \
    configs/default.py
main default_warm "$W/cache" configs/default.py
RUN_ENV=$NOPRE main default_warm_nopre "$W/cache" configs/default.py
for round in 1 2; do
  main fast_cold_$round '' configs/fast.py \
      --config.target_test_accuracy=0.9
  [ "${TORCH_DEVICE:-cuda}" = none ] || timed torch_$round \
      $PY -m cnn_jax.torch_reference time_to_target \
      --manual_dir="$W/idx" --target=0.9 --batch_size=100 --threads=2 \
      --device=${TORCH_DEVICE:-cuda}
done
main fast_fill "$W/cache_fast" configs/fast.py \
    --config.target_test_accuracy=0.9
main fast_warm "$W/cache_fast" configs/fast.py \
    --config.target_test_accuracy=0.9
RUN_ENV=$NOPRE main fast_warm_nopre "$W/cache_fast" configs/fast.py \
    --config.target_test_accuracy=0.9
RUN_ENV=$NOPRE main fast_cold_nopre '' configs/fast.py \
    --config.target_test_accuracy=0.9
# JAX's own minimum for caching a program (1 s), as where
# JAX_COMPILATION_CACHE_DIR is set (cli.start), against the project's 0:
# fast_fill paid 2.0 s in process over fast_cold_* at 4babcaa.
CACHE_ENV=JAX_COMPILATION_CACHE_DIR=$W/cache_env
RUN_ENV=$CACHE_ENV main fast_fill_env '' configs/fast.py \
    --config.target_test_accuracy=0.9
RUN_ENV=$CACHE_ENV main fast_warm_env '' configs/fast.py \
    --config.target_test_accuracy=0.9
tar czf "$OUT/logs.tar.gz" -C "$W" --exclude=checkpoints \
    --exclude='events.out.tfevents*' --exclude=site --exclude=idx \
    --exclude='cache*' .
cat "$OUT"/phases*.txt "$OUT/times.txt" 2> /dev/null
