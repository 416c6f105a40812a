#!/bin/bash
# scripts/gpu_check.sh on a lent GPU machine with JAX and PyTorch but no
# network, TensorFlow or ml_collections, in one call of the workplace's
# device tool, its results packed into the few files that come back from
# $OUT. Prepare here with `make gpu-carry` (the ml_collections wheel in
# .whl/, the decoded-split cache in .gpu/) and commit, then run, from the
# repo root there:
#
#   CNN_JAX_GIT_COMMIT=<commit> bash scripts/gpu_lease.sh
#
# with carry [".whl", ".gpu"] and timeout_s 600 (README: "On this
# workplace's lent GPU machine"). DEADLINE_S (default 480) bounds
# gpu_check.sh: keep it about 100 s under the call's limit, which is what is
# packed and sent back. STEPS (here by default all four: a session's device
# time rarely allows a second call) and SWEEP_LIMIT_S (default 120: the
# sweep's target is 90 s, and the tests come after it) pass through to it,
# as do BENCH_ARGS and RUN_ARGS.
set -uo pipefail
: "${OUT:?OUT: the folder whose files come back (the device tool sets it)}"
WORK=${WORK:-/tmp/gpu_check}
SITE=${SITE:-/tmp/site}
rm -rf "$WORK" "$WORK-idx"  # A second call on a warm machine starts clean.

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$SITE" .whl/*.whl || exit 1
export PYTHONPATH=$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}
# The IDX files PyTorch reads, rebuilt from the cache (see the script).
python3 scripts/idx_from_cache.py .gpu/tfds "$WORK-idx" || exit 1

STEPS=${STEPS:-benchmark default sweep tests} \
    SWEEP_LIMIT_S=${SWEEP_LIMIT_S:-120} \
    DEADLINE_S=${DEADLINE_S:-480} DATA_DIR=$PWD/.gpu/tfds MANUAL_DIR=$WORK-idx \
    bash scripts/gpu_check.sh "$WORK"
rc=$?

# What comes back: at most 8 files, at most two folders down, plain names.
cp "$WORK/timings.txt" "$WORK/devices.txt" "$OUT/"
cp "$WORK/benchmark/benchmark.md" "$OUT/" 2>/dev/null
tar czf "$OUT/gpu_check.tar.gz" --exclude=checkpoints \
    --exclude='events.out.tfevents*' -C "$(dirname "$WORK")" \
    "$(basename "$WORK")"
cat "$OUT/devices.txt" "$OUT/timings.txt"
tail -n 4 "$WORK"/*.log
exit $rc
