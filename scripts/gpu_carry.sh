#!/bin/bash
# Prepares, on this machine, what scripts/gpu_lease.sh needs on a lent GPU
# machine that has no network or TensorFlow (`make gpu-carry` runs it):
#
#   .whl/   the pure-Python wheels of ml_collections and tensorboardX, at the
#           versions installed here (that machine's image lacks both)
#   .gpu/   the decoded-split cache of Fashion-MNIST, written here after TFDS
#           has prepared and verified the data (about 53 MiB)
#
# Both folders are git-ignored; the device tool's call names them in carry.
set -euo pipefail
PY=${PY:-.venv/bin/python}
DATA_DIR=${DATA_DIR:-workdirs/tfds}
MANUAL_DIR=${MANUAL_DIR:-$(realpath -m ../shared/data/fashion_mnist)}

rm -rf .whl .gpu
mkdir -p .whl
for pkg in ml_collections tensorboardX; do
  version=$($PY -c "import importlib.metadata as m; print(m.version('$pkg'))")
  $PY -m pip download -q --no-deps --only-binary=:all: -d .whl "$pkg==$version"
done

cache=$($PY - "$DATA_DIR" "$MANUAL_DIR" <<'PYEOF'
import sys
from configs import default
from cnn_jax import input_pipeline
config = default.get_config().data
config.data_dir, config.manual_dir = sys.argv[1:]
input_pipeline.load_splits(config)  # Prepares through TFDS and caches.
print(input_pipeline.find_cache(config))
PYEOF
)
dest=.gpu/tfds/fashion_mnist/$(basename "$cache")
mkdir -p "$dest"
cp "$cache"/cnn_jax_*.npz "$dest/"
du -sh .whl .gpu
