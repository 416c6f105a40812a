"""Seconds to load the three splits in a fresh process: cache against TFDS.

  python benchmarks/data_cache/startup.py DATA_DIR cache   # or: tfds

DATA_DIR must hold TFDS's prepared fashion_mnist and the cache next to it
(any earlier run with --config.data.data_dir=DATA_DIR writes both). The time
counts from the first import of the package, so TensorFlow's import is in it
when TFDS is read. Run each way in its own process, alternating.
"""

import os
import sys
import time

t0 = time.perf_counter()
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..'))
from configs import default  # pylint: disable=g-import-not-at-top
from cnn_jax import input_pipeline  # pylint: disable=g-import-not-at-top

config = default.get_config().data
config.data_dir, config.cache = sys.argv[1], sys.argv[2] == 'cache'
input_pipeline.load_splits(config)
print(f'{sys.argv[2]}: {time.perf_counter() - t0:.2f} s, TensorFlow imported: '
      f'{"tensorflow" in sys.modules}')
