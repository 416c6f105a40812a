"""The seed's activations x its four poolings x 3 seeds: the ablation table.

Run (every point in its own sub-folder; run again to resume):
  python -m cnn_jax.sweep --config=configs/sweeps/activation_pooling.py \\
      --workdir=experiments/activation_pooling/runs
Table:
  python -m cnn_jax.report --workdir=experiments/activation_pooling/runs
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  """The base every point starts from: the default recipe."""
  return default.get_config()


def get_sweep() -> dict:
  """The axes (field -> values), crossed in this order, and the table they make."""
  return {
      'axes': {
          'model.activation': ['sigmoid', 'tanh', 'relu'],
          'model.pooling': ['max', 'avg', 'l2', 'gaussian'],
          'seed': [0, 1, 2],
      },
      # Table rows, columns and cell value; seeds are averaged over.
      'rows': 'model.activation',
      'cols': 'model.pooling',
      'metric': 'test_accuracy',
  }
