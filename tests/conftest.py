"""Test-wide set-up: two CPU devices, so every mapped path runs sharded,
and compilation kept cheap, since compiling is most of what the tests spend.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # `from configs import default`, as config files do.

import _util  # pylint: disable=g-bad-import-order

# Must precede the first `import jax` anywhere in the test process; the
# subprocesses that tests start inherit them (_util.subprocess_env).
os.environ.setdefault('XLA_FLAGS', _util.xla_flags(devices=2))
# Programs compiled once are reused by every later test and subprocess with
# the same shapes, from JAX's persistent compilation cache.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(ROOT, '.pytest_cache', 'jax_cache'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')

# The package's environment preamble (quiet TensorFlow, XLA options), before
# any test module imports TensorFlow through TFDS.
import cnn_jax  # pylint: disable=unused-import
import pytest


@pytest.fixture(scope='session')
def real_data_dir(tmp_path_factory):
  """A TFDS data_dir shared by the tests that read the real Fashion-MNIST.

  Prepared once per session from CNN_JAX_MANUAL_DIR when it is set (offline),
  else downloaded by TFDS.
  """
  return str(tmp_path_factory.mktemp('tfds'))
