#!/bin/bash
# Bundles what an offline GPU host needs to run this project (no network, no
# TensorFlow): `make offline-bundle` runs it here, where the data can be
# prepared, and the two folders are copied to the host with the repo.
#
#   .whl/   wheels of the packages the host's image lacks (by default
#           ml_collections, at the version installed here; PACKAGES names
#           others). Only pure-Python wheels, so that one built here installs
#           under the host's Python.
#   .gpu/   the decoded-split cache of Fashion-MNIST, written here after TFDS
#           has prepared and verified the data (about 53 MiB); the host's
#           runs read it with --config.data.data_dir=$PWD/.gpu/tfds
#
# On the host, scripts/gpu_check.sh installs the wheels and, for PyTorch,
# rebuilds the IDX files from the cache (scripts/idx_from_cache.py). Both
# folders are git-ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA_DIR=${DATA_DIR:-workdirs/tfds}
MANUAL_DIR=${MANUAL_DIR:-$(realpath -m ../shared/data/fashion_mnist)}

rm -rf .whl.new .gpu.new
trap 'rm -rf .whl.new .gpu.new' EXIT  # Nothing half-written stays behind.
mkdir -p .whl.new
for pkg in ${PACKAGES:-ml_collections}; do
  version=$($PY -c "import importlib.metadata as m; print(m.version('$pkg'))")
  $PY -m pip download -q --no-deps --only-binary=:all: -d .whl.new \
      "$pkg==$version"
done
ls .whl.new/*-py3-none-any.whl > /dev/null  # Pure Python, or stop here.

$PY - "$DATA_DIR" "$MANUAL_DIR" .gpu.new/tfds <<'PYEOF'
import os, shutil, sys
from configs import default
from cnn_jax import errors
from cnn_jax import input_pipeline
config = default.get_config().data
config.data_dir, config.manual_dir, dest = sys.argv[1:]
try:
  input_pipeline.load_splits(config)  # Prepares through TFDS and caches.
except errors.UserError as e:
  sys.exit(f'error: {e}')
folder = input_pipeline.find_cache(config)
dest = os.path.join(dest, config.dataset, os.path.basename(folder))
os.makedirs(dest)
for name in input_pipeline.cache_files():  # The checks need all of them.
  shutil.copy(os.path.join(folder, name), dest)
PYEOF
rm -rf .whl .gpu
mv .whl.new .whl
mv .gpu.new .gpu
du -sh .whl .gpu
