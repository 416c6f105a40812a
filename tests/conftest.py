"""Test-wide set-up: two CPU devices, so every pmapped path runs sharded."""

import os
import sys

# Must precede the first `import jax` anywhere in the test process.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=2')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # `from configs import default`, as config files do.

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
