"""scripts/idx_from_cache.py: the cache back to IDX files PyTorch reads."""

import os
import subprocess
import sys

import numpy as np

from cnn_jax import input_pipeline
from cnn_jax import torch_reference
import _util

SCRIPT = os.path.join(_util.ROOT, 'scripts', 'idx_from_cache.py')


def _script(*args):
  return subprocess.run([sys.executable, SCRIPT, *map(str, args)],
                        capture_output=True, text=True, timeout=300)


def test_the_cached_splits_come_back_as_idx_files(tmp_path):
  rng = np.random.default_rng(0)
  folder = tmp_path / 'tfds' / 'fashion_mnist' / '3.0.1'
  folder.mkdir(parents=True)
  splits = {}
  for split, n in (('train', 7), ('test', 5)):
    splits[split] = {
        'image': rng.integers(0, 256, (n, 28, 28, 1), np.uint8),
        'label': rng.integers(0, 10, n).astype(np.int32)}
    np.savez(folder / input_pipeline.CACHE_FILE.format(split=split),
             **splits[split])
  proc = _script(tmp_path / 'tfds', tmp_path / 'idx')
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert sorted(os.listdir(tmp_path / 'idx')) == sorted(
      input_pipeline.MANUAL_FILES)
  for split, prefix in (('train', 'train'), ('test', 't10k')):
    images, labels = torch_reference.load(str(tmp_path / 'idx'), prefix
                                          ).tensors
    np.testing.assert_array_equal(
        (images.numpy()[:, 0] * 255).round().astype(np.uint8),
        splits[split]['image'][..., 0])
    np.testing.assert_array_equal(labels.numpy(), splits[split]['label'])


def test_no_cache_is_one_line_and_writes_nothing(tmp_path):
  proc = _script(tmp_path / 'empty', tmp_path / 'idx')
  assert proc.returncode != 0
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and 'decoded-split cache' in last
  assert 'Traceback' not in proc.stderr
  assert not (tmp_path / 'idx').exists()
