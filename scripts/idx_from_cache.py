"""Writes the four Fashion-MNIST IDX .gz files from the decoded-split cache.

  python scripts/idx_from_cache.py DATA_DIR OUT_DIR

For an offline GPU host (scripts/gpu_check.sh): the seed's PyTorch model
reads the IDX files, while the JAX runs need only the cache, so
`make offline-bundle` ships the cache alone and the .gz files are rebuilt
there. The pixels and labels are the
ones TFDS decoded and verified; only the order differs from the original
files (TFDS's), which PyTorch's shuffled training does not see.
"""

import gzip
import os
import struct
import sys

import ml_collections
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
sys.path.insert(0, ROOT)

from cnn_jax import errors  # pylint: disable=g-import-not-at-top
from cnn_jax import input_pipeline  # pylint: disable=g-import-not-at-top

# IDX magic: 0x08 (unsigned bytes) in the third byte, the rank in the fourth.
_UBYTE = 0x0800
PREFIX = {'train': 'train', 'test': 't10k'}


def write_idx(path: str, array: np.ndarray) -> None:
  """One IDX file, gzipped, written whole or not at all."""
  if array.dtype != np.uint8 and (array.min() < 0 or array.max() > 255):
    raise ValueError(f'{path}: values outside 0..255')
  header = struct.pack('>I', _UBYTE | array.ndim) + struct.pack(
      f'>{array.ndim}I', *array.shape)
  tmp = path + '.tmp'
  with gzip.open(tmp, 'wb', compresslevel=1) as f:
    f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())
  os.replace(tmp, path)


def main(data_dir: str, out_dir: str) -> None:
  """The train and test splits of DATA_DIR's cache as IDX files in OUT_DIR."""
  try:
    folder = input_pipeline.find_cache(ml_collections.ConfigDict(
        {'data_dir': data_dir, 'dataset': 'fashion_mnist'}))
    if folder is None:
      sys.exit(f'error: {data_dir} holds no decoded-split cache '
               f'(<dataset>/<version>/: '
               f'{", ".join(input_pipeline.cache_files())})')
    # Checked as a run checks it: a damaged cache converts to nothing.
    full, _ = input_pipeline.read_cache(folder, 'fashion_mnist')
  except errors.UserError as e:
    sys.exit(f'error: {e}')
  os.makedirs(out_dir, exist_ok=True)
  for split, prefix in PREFIX.items():
    write_idx(os.path.join(out_dir, f'{prefix}-images-idx3-ubyte.gz'),
              full[split]['image'][..., 0])
    write_idx(os.path.join(out_dir, f'{prefix}-labels-idx1-ubyte.gz'),
              full[split]['label'])
  print(f'wrote {out_dir} from {folder}')


if __name__ == '__main__':
  if len(sys.argv) != 3:
    sys.exit('usage: python scripts/idx_from_cache.py DATA_DIR OUT_DIR')
  main(*sys.argv[1:])
