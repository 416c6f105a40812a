"""scripts/idx_from_cache.py: the cache back to IDX files PyTorch reads."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cnn_jax import input_pipeline
from cnn_jax import torch_reference
import _util

SCRIPT = os.path.join(_util.ROOT, 'scripts', 'idx_from_cache.py')


def _main():
  """The script's main(), run in this process."""
  spec = importlib.util.spec_from_file_location('idx_from_cache', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.main


def _script(*args):
  return subprocess.run([sys.executable, SCRIPT, *map(str, args)],
                        capture_output=True, text=True, timeout=300)


def _cache(data_dir, splits):
  """A cache as a run writes it, in a folder as TFDS prepares it."""
  folder = data_dir / 'fashion_mnist' / '3.0.1'
  folder.mkdir(parents=True)
  (folder / 'dataset_info.json').write_text(json.dumps(
      {'name': 'fashion_mnist', 'version': '3.0.1'}))
  input_pipeline.write_cache(str(folder), splits, 'fashion_mnist')
  return folder


def test_the_cached_splits_come_back_as_idx_files(tmp_path):
  rng = np.random.default_rng(0)
  splits = {}
  for split, n in (('train', 60_000), ('test', 10_000)):
    # Random pixels in the first images; the rest stay 0, which is cheaper.
    image = np.zeros((n, 28, 28, 1), np.uint8)
    image[:50] = rng.integers(0, 256, (50, 28, 28, 1), np.uint8)
    splits[split] = {'image': image,
                     'label': rng.integers(0, 10, n).astype(np.int32)}
  _cache(tmp_path / 'tfds', splits)
  _main()(str(tmp_path / 'tfds'), str(tmp_path / 'idx'))
  assert sorted(os.listdir(tmp_path / 'idx')) == sorted(
      input_pipeline.MANUAL_FILES)
  for split, prefix in (('train', 'train'), ('test', 't10k')):
    images, labels = torch_reference.load(str(tmp_path / 'idx'), prefix
                                          ).tensors
    np.testing.assert_array_equal(
        (images.numpy()[:, 0] * 255).round().astype(np.uint8),
        splits[split]['image'][..., 0])
    np.testing.assert_array_equal(labels.numpy(), splits[split]['label'])


def test_a_cache_that_fails_its_checks_is_one_line_and_writes_nothing(
    tmp_path):
  n = {'train': 60_000, 'test': 10_000}
  folder = _cache(tmp_path / 'tfds', {
      split: {'image': np.zeros((n[split], 28, 28, 1), np.uint8),
              'label': np.zeros(n[split], np.int32)} for split in n})
  test = folder / input_pipeline.CACHE_FILE.format(split='test')
  test.write_bytes(test.read_bytes()[:1000])  # Truncated.
  with pytest.raises(SystemExit) as e:  # Printed as is, with status 1.
    _main()(str(tmp_path / 'tfds'), str(tmp_path / 'idx'))
  assert e.value.code == (
      f'error: {test}: cannot be read (BadZipFile: File is not a zip file); '
      f'delete {folder}/cnn_jax_*.npz to rebuild the cache from TFDS')
  assert not (tmp_path / 'idx').exists()


def test_no_cache_is_one_line_and_writes_nothing(tmp_path):
  proc = _script(tmp_path / 'empty', tmp_path / 'idx')
  assert proc.returncode != 0
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and 'decoded-split cache' in last
  assert 'Traceback' not in proc.stderr
  assert not (tmp_path / 'idx').exists()
