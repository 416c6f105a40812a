"""The size of the dense layer's input and output at initialisation.

  python experiments/bn_init_layers/feature_scale.py [DATA_DIR]

For the model of configs/claims/bn_init_layers.py with BatchNorm on and
off, default kernels, three initialisations (jax.random.key(0), (1), (2)):
the root mean square of the penultimate
features (the dense layer's input) and of the logits, on the first 1,000
training images in one batch, as the first training step sees them
(BatchNorm with batch statistics). A x100 dense kernel multiplies the
logits by 100. DATA_DIR is the prepared TFDS folder (default
workdirs/tfds); it reads the decoded-split cache or TFDS.
"""

import os
import sys

import jax
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
sys.path.insert(0, ROOT)

from cnn_jax import input_pipeline  # pylint: disable=g-import-not-at-top
from cnn_jax import models  # pylint: disable=g-import-not-at-top
from configs.claims import bn_init_layers  # pylint: disable=g-import-not-at-top

config = bn_init_layers.get_config()
config.data.data_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    ROOT, 'workdirs', 'tfds')
images = input_pipeline.normalize(
    input_pipeline.load_splits(config.data)['train']['image'][:1000])
rms = lambda x: float(np.sqrt(np.mean(np.square(x))))
for bn in (True, False):
  config.model.batch_norm = bn
  model = models.create_model(config.model, bn_axis_name=None)
  features, logits = [], []
  for seed in range(3):
    variables = model.init(jax.random.key(seed), images[:2], train=False)
    out, state = model.apply(variables, images, train=True,
                             mutable=['batch_stats', 'intermediates'])
    features.append(rms(state['intermediates']['features'][0]))
    logits.append(rms(out))
  each = ', '.join(f'{f:.3f}' for f in features)
  print(f'BatchNorm {"on " if bn else "off"}: features RMS '
        f'{np.mean(features):.3f} ({each}), logits RMS {np.mean(logits):.3f}')
