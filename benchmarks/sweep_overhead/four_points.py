"""Four one-epoch points on 1,024 examples: a sweep whose cost is overhead.

Used by benchmarks/sweep_overhead/measure.sh to time what each point costs
besides training (data loading, compilation, start-up).
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.num_epochs = 1
  config.data.num_train_examples = 1024
  return config


def get_sweep() -> dict:
  return {
      'axes': {'model.activation': ['relu', 'tanh'],
               'model.pooling': ['max', 'avg'], 'seed': [0]},
      'rows': 'model.activation', 'cols': 'model.pooling',
      'metric': 'test_accuracy',
  }
