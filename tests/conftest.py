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
import jax
import pytest


@pytest.fixture(scope='session')
def real_data_dir(tmp_path_factory):
  """A TFDS data_dir shared by the tests that read the real Fashion-MNIST.

  Prepared once per session from CNN_JAX_MANUAL_DIR when it is set (offline),
  else downloaded by TFDS.
  """
  return str(tmp_path_factory.mktemp('tfds'))


@pytest.fixture(scope='session')
def trained_run(tmp_path_factory):
  """The folder of a tiny run trained for two epochs on mock data, shared by
  the tests of the commands that read a trained run (evaluate, predict).

  Mock data are random: the run learns nothing, but it has everything a
  real run leaves behind.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from cnn_jax import train  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp('trained_run')
  config = _util.tiny_config()
  config.num_epochs = 2
  with tfds.testing.mock_data(num_examples=48):
    train.train_and_evaluate(config, str(workdir))
  return workdir


def _memory_mappings() -> int:
  with open('/proc/self/maps', 'rb') as f:
    return sum(1 for _ in f)


def _mapping_limit() -> int:
  try:
    with open('/proc/sys/vm/max_map_count') as f:
      return int(f.read())
  except OSError:  # Not Linux: no such limit to keep under.
    return 0


_MAPPING_LIMIT = _mapping_limit()


@pytest.fixture(autouse=True)
def release_compiled_programs():
  """Frees the programs compiled so far once they hold half the memory
  mappings the kernel allows a process.

  Each XLA CPU executable holds its own memory mappings. A suite run that
  kept every program alive in one process reached the kernel's
  vm.max_map_count (65,530 here) in train_test.py and segfaulted inside the
  compiler. Freeing them after every test instead made each test compile
  (or load from the persistent compilation cache) the programs an earlier
  test already had: most of the time of the many small tests.
  """
  yield
  if _MAPPING_LIMIT and _memory_mappings() > _MAPPING_LIMIT // 2:
    jax.clear_caches()
