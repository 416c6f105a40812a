"""Claim 2: "pooling provides translation invariance".

The seed's model and plain recipe (configs/seed_recipe.py), 3 epochs, with
each pooling in the seed's 2x2 windows, and a baseline without pooling whose
convs have stride 2 (the same 14x14 and 7x7 feature maps). Gaussian pooling
is left out: in 2x2 windows it equals average pooling (cnn_jax/pooling.py).
After training, the test images are shifted by 0 to 6 pixels (zero fill) up,
down, left and right (experiments/claims/invariance.py).

Run (trains what is missing, then writes results.md and the plot):
  python -m experiments.claims.main --config=configs/claims/translation.py \\
      --workdir=experiments/translation
"""

import ml_collections

from configs import seed_recipe

# Downsampling without pooling: stride-2 convs, pools of one pixel.
STRIDED_CONV = {'name': 'strided_conv', 'model.pooling': 'subsample',
                'model.conv_stride': 2, 'model.pool_window': 1,
                'model.pool_stride': 1}


def get_config() -> ml_collections.ConfigDict:
  config = seed_recipe.get_config()
  config.num_epochs = 3
  return config


def get_sweep() -> dict:
  return {
      'axes': {
          'model.pooling': ['max', 'avg', 'l2', STRIDED_CONV],
          'seed': [0, 1, 2],
      },
      'rows': 'model.pooling',
      'cols': 'seed',
      'metric': 'test_accuracy',
      'analysis': 'translation',
  }
