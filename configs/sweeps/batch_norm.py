"""BatchNorm on and off x the seed's 3 activations x 3 seeds.

Run:
  python -m cnn_jax.sweep --config=configs/sweeps/batch_norm.py \\
      --workdir=experiments/batch_norm/runs
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  return default.get_config()


def get_sweep() -> dict:
  return {
      'axes': {
          'model.batch_norm': [True, False],
          'model.activation': ['sigmoid', 'tanh', 'relu'],
          'seed': [0, 1, 2],
      },
      'rows': 'model.activation',
      'cols': 'model.batch_norm',
      'metric': 'test_accuracy',
  }
