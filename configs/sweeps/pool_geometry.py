"""The seed's pooling geometry: 3x3 windows, stride 2, padding 1.

In the default 2x2 windows all four pixels are equally far from the centre,
so the Gaussian pool equals the average pool there. A 3x3 window has a
centre, so the two differ, and stride 2 with padding 1 keeps the default's
feature-map sizes (28 -> 14 -> 7). Relu comes first so that its row is
complete earliest when the sweep runs in pieces on a CPU.

Run (every point in its own sub-folder; run again to resume):
  python -m cnn_jax.sweep --config=configs/sweeps/pool_geometry.py \\
      --workdir=experiments/pool_geometry/runs
Table:
  python -m cnn_jax.report --workdir=experiments/pool_geometry/runs
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  """The default recipe with 3x3 / stride 2 / padding 1 pooling windows."""
  config = default.get_config()
  config.model.pool_window = 3
  config.model.pool_stride = 2
  config.model.pool_padding = 1
  return config


def get_sweep() -> dict:
  """The axes (field -> values), crossed in this order, and the table they make."""
  return {
      'axes': {
          'model.activation': ['relu', 'tanh', 'sigmoid'],
          'model.pooling': ['max', 'avg', 'l2', 'gaussian'],
          'seed': [0, 1, 2],
      },
      'rows': 'model.activation',
      'cols': 'model.pooling',
      'metric': 'test_accuracy',
  }
