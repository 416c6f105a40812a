"""Claim 1: "ReLU ... speeds up convergence by 6 times" over sigmoid and tanh.

The seed's model and plain recipe (configs/seed_recipe.py: Adam 1e-3,
constant rate, no augmentation, no label smoothing), each activation with
and without BatchNorm, 5 seeds, 3 epochs (1,650 steps of 100 images). The
analysis finds the step (and training seconds) at which the mean error of
the last 20 training batches first fell below each of the sweep's levels:
25%, the level of the original comparison (Krizhevsky et al., 2012, on
CIFAR-10), and 10% (experiments/claims/marks.py).

Run (trains what is missing, then writes results.md and the plot):
  python -m experiments.claims.main --config=configs/claims/relu_speed.py \\
      --workdir=experiments/relu_speed
"""

import ml_collections

from configs import seed_recipe


def get_config() -> ml_collections.ConfigDict:
  config = seed_recipe.get_config()
  config.num_epochs = 3
  return config


def get_sweep() -> dict:
  return {
      'axes': {
          'model.batch_norm': [True, False],
          'model.activation': ['relu', 'tanh', 'sigmoid'],
          'seed': [0, 1, 2, 3, 4],
      },
      'rows': 'model.activation',
      'cols': 'model.batch_norm',
      'metric': 'test_accuracy',
      'analysis': 'convergence',
      # Training-error levels to reach.
      'levels': (0.25, 0.1),
  }
