"""Claim 3, a follow-up: which kernels' bad scale BatchNorm fails to undo.

experiments/bn_init found that with BatchNorm a x10 or x100 initialisation
of every kernel still costs test accuracy. Two readings: the dense layer has
no BatchNorm after it, so its large kernel makes large logits; or a large
conv kernel behind BatchNorm learns slowly, as Adam's steps have a fixed
size and the conv's output does not depend on its kernel's scale. Here only
the conv kernels or only the dense kernel start at x10 or x100, with and
without BatchNorm, with bn_init's recipe otherwise (its 'all' rows are the
comparison): 24 runs.

Run (trains what is missing, then writes results.md and the plot):
  python -m experiments.claims.main --config=configs/claims/bn_init_layers.py \\
      --workdir=experiments/bn_init_layers
"""

import ml_collections

from configs.claims import bn_init


def get_config() -> ml_collections.ConfigDict:
  return bn_init.get_config()


def get_sweep() -> dict:
  return {
      'axes': {
          'model.batch_norm': [True, False],
          'model.kernel_init_layers': ['conv', 'dense'],
          'model.kernel_init_scale': [10.0, 100.0],
          'seed': [0, 1, 2],
      },
      # For `cnn_jax.report`'s two-way table (x10 and x100 in one cell);
      # the analysis tabulates every axis.
      'rows': 'model.kernel_init_layers',
      'cols': 'model.batch_norm',
      'metric': 'test_accuracy',
      'analysis': 'init_scale',
  }
