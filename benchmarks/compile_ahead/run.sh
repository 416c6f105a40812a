#!/bin/bash
# The 36-run activation x pooling sweep twice on a GPU host, without and
# with --compile_ahead (the next point's programs compiled in a thread while
# a point trains), each with a fresh compilation cache (from the repo root,
# with .whl/ and .gpu/ from `make offline-bundle`):
#
#   OUT=DIR CNN_JAX_GIT_COMMIT=<commit> bash benchmarks/compile_ahead/run.sh
#
# Writes $OUT/times.txt (each sweep: exit status, launch-to-exit seconds,
# and the seconds from the first point's start to the last one's end, from
# its log) and $OUT/logs.tar.gz. SWEEP_LIMIT_S (default 270) bounds each
# sweep; RUN_ARGS shrinks them for a trial on a CPU; PY picks the Python;
# AHEADS (default "false true") the --compile_ahead values, in order.
set -uo pipefail
: "${OUT:?OUT: the folder whose files come back}"
PY=${PY:-python3}
W=${WORK:-/tmp/compile_ahead}
rm -rf "$W" && mkdir -p "$W"
source scripts/gpu_site.sh
echo "commit ${CNN_JAX_GIT_COMMIT:-unknown}" > "$OUT/times.txt"
# The machine's first JAX process starts the GPU's driver: not in a sweep.
$PY -c 'import jax; print(jax.devices())' >> "$OUT/times.txt" 2>&1

for ahead in ${AHEADS:-false true}; do
  a=$(date +%s.%N)
  timeout -k 5 "${SWEEP_LIMIT_S:-270}" $PY -m cnn_jax.sweep \
      --config=configs/sweeps/activation_pooling.py \
      --workdir="$W/runs_$ahead" --config.data.data_dir="$PWD/.gpu/tfds" \
      --compilation_cache="$W/cache_$ahead" --compile_ahead=$ahead \
      ${RUN_ARGS:-} > "$W/sweep_$ahead.log" 2>&1
  rc=$? b=$(date +%s.%N)
  # absl's time stamps: the first "points" line to the last "points done".
  span=$($PY - "$W/sweep_$ahead.log" <<'PYEOF'
import re, sys
t = [(int(h) * 3600 + int(m) * 60 + float(s), what) for h, m, s, what in
     re.findall(r'^I\d{4} (\d\d):(\d\d):(\d\d\.\d+) .*?\] (points |sweep: )',
                open(sys.argv[1]).read(), re.M)]
starts = [s for s, w in t if w == 'points ']
ends = [s for s, w in t if w == 'sweep: ']
print(f'{ends[-1] - starts[0]:.1f} s first point to last, '
      f'{len(ends)} groups' if starts and ends else 'no points logged')
PYEOF
)
  awk -v n="compile_ahead=$ahead" -v rc=$rc -v a="$a" -v b="$b" -v s="$span" \
      'BEGIN { printf "%-20s rc=%d %6.1f s launch to exit; %s\n",
               n, rc, b - a, s }' | tee -a "$OUT/times.txt"
done
tar czf "$OUT/logs.tar.gz" -C "$W" $(cd "$W" && ls sweep_*.log)
