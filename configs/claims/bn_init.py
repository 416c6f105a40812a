"""Claim 3: "batch normalisation prevents incorrect initialisation of the
weight matrices".

The seed's model with ReLU and its plain recipe (configs/seed_recipe.py),
2 epochs, with and without BatchNorm, every conv and dense kernel
initialised at x0.1, x1, x10 and x100 the default (LeCun normal), 3 seeds.
Only a non-finite loss stops a run here (max_train_loss = inf), so that a
run whose loss explodes and recovers shows its final accuracy.

Run (trains what is missing, then writes results.md and the plot):
  python -m experiments.claims.main --config=configs/claims/bn_init.py \\
      --workdir=experiments/bn_init
"""

import ml_collections

from configs import seed_recipe


def get_config() -> ml_collections.ConfigDict:
  config = seed_recipe.get_config()
  config.num_epochs = 2
  config.max_train_loss = float('inf')
  return config


def get_sweep() -> dict:
  return {
      'axes': {
          'model.batch_norm': [True, False],
          'model.kernel_init_scale': [0.1, 1.0, 10.0, 100.0],
          'seed': [0, 1, 2],
      },
      'rows': 'model.kernel_init_scale',
      'cols': 'model.batch_norm',
      'metric': 'test_accuracy',
      'analysis': 'init_scale',
  }
