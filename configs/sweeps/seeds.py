"""The default recipe over several seeds: the headline result and its spread.

Run (seeds train together in one vmapped program on accelerators):
  python -m cnn_jax.sweep --config=configs/sweeps/seeds.py --workdir=DIR
  python -m cnn_jax.report --workdir=DIR
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  return default.get_config()


def get_sweep() -> dict:
  return {
      # One cell: the default's activation and pooling, averaged over seeds.
      'axes': {'model.activation': ['relu'], 'model.pooling': ['max'],
               'seed': [0, 1, 2]},
      'rows': 'model.activation',
      'cols': 'model.pooling',
      'metric': 'test_accuracy',
  }
