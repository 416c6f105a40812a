"""Helpers shared by the tests: the tiny config every test derives from."""

import os

from configs import default

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The four original .gz files for offline preparation: what `make test` passes,
# else the workplace's shared copy beside the repo; empty lets TFDS download.
_SHARED = os.path.join(ROOT, '..', 'shared', 'data', 'fashion_mnist')
MANUAL_DIR = os.environ.get('CNN_JAX_MANUAL_DIR') or (
    os.path.abspath(_SHARED) if os.path.isdir(_SHARED) else '')


def tiny_config():
  """The default config shrunk to seconds: one epoch on a few examples."""
  config = default.get_config()
  config.num_epochs = 1
  config.batch_size = 8
  config.eval_batch_size = 8
  config.data.num_validation_examples = 8
  config.data.num_train_examples = 32
  return config
