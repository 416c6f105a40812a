"""The seed article's recipe, nothing added: Adam at 1e-3, constant rate.

Cross-entropy without label smoothing, no weight decay, no augmentation,
batch 100 (the batch of the PyTorch reference, `cnn_jax.torch_reference`;
the article names none). The architecture is configs/default.py's. The
benchmark's JAX side and the seed's claims experiments start from here.

  python -m cnn_jax.main --config=configs/seed_recipe.py --workdir=/tmp/seed
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.batch_size = 100
  config.learning_rate = 1e-3
  config.lr_schedule = 'constant'
  config.weight_decay = 0.0
  config.label_smoothing = 0.0
  config.data.random_flip = False
  config.data.random_shift = 0
  return config
