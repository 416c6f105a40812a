"""Can TFDS's own TensorFlow-free reader serve the trainer? (issue #11)

  python benchmarks/data_cache/data_source.py NEW_DIR MANUAL_DIR CACHE_DIR

1. Prepares fashion_mnist in NEW_DIR in the array_record format (this step
   needs TensorFlow, as every TFDS preparation does).
2. In a fresh process in which `import tensorflow` fails, opens
   `tfds.data_source` over it (and, separately, the read-only
   `tfds.builder_from_directory(...).as_data_source`) and reads both splits
   into arrays, timed; then
   the project's decoded-split cache in CACHE_DIR (a data_dir where the
   trainer has run once), timed the same way.
Prints one JSON line per reader.
"""

import json
import subprocess
import sys

READ = r'''
import importlib.abc, json, sys, time
class NoTensorFlow(importlib.abc.MetaPathFinder):
  """Any import of TensorFlow fails, as on a machine without it. (Not a
  None in sys.modules: TFDS would take that for TensorFlow loaded.)"""
  def find_spec(self, name, path, target=None):
    if name.split('.')[0] == 'tensorflow':
      raise ImportError(f'No module named {name!r} (blocked)')
sys.meta_path.insert(0, NoTensorFlow())
t0 = time.perf_counter()
how, data_dir = sys.argv[1], sys.argv[2]
import numpy as np
if how in ('data_source', 'builder_from_directory'):
  import os
  import tensorflow_datasets as tfds
  sizes = {}
  for split in ('train', 'test'):
    if how == 'data_source':
      source = tfds.data_source('fashion_mnist', split=split,
                                data_dir=data_dir, download=False)
    else:  # The read-only builder, which needs no dataset code.
      source = tfds.builder_from_directory(os.path.join(
          data_dir, 'fashion_mnist', '3.0.1')).as_data_source(split=split)
    examples = source.__getitems__(range(len(source)))
    images = np.stack([e['image'] for e in examples])
    sizes[split] = images.shape[0]
else:
  import ml_collections
  from cnn_jax import input_pipeline
  config = ml_collections.ConfigDict(dict(
      dataset='fashion_mnist', data_dir=data_dir, manual_dir='', cache=True,
      num_validation_examples=5000, num_train_examples=-1))
  splits = input_pipeline.load_splits(config)
  sizes = {k: v['label'].shape[0] for k, v in splits.items()}
print(json.dumps({'reader': how, 'seconds': time.perf_counter() - t0,
                  'examples': sizes}))
'''


def main() -> None:
  data_dir, manual_dir, cache_dir = sys.argv[1:4]
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder('fashion_mnist', data_dir=data_dir,
                         file_format='array_record')
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual_dir))
  for how, folder in (('data_source', data_dir),
                      ('builder_from_directory', data_dir),
                      ('cache', cache_dir)):
    out = subprocess.run([sys.executable, '-c', READ, how, folder],
                         capture_output=True, text=True)
    last = (out.stdout.strip() or out.stderr.strip()).splitlines()[-1]
    print(last if out.returncode == 0 else json.dumps(
        {'reader': how, 'failed': last}))


if __name__ == '__main__':
  main()
