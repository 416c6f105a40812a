"""Checks a config before anything is written, naming the field at fault.

A run that fails here leaves no workdir behind, so no later reader can take
a half-made folder for a result.
"""

import jax
import ml_collections

from cnn_jax import input_pipeline
from cnn_jax import parallel
from cnn_jax import registry

LR_SCHEDULES = ('constant', 'cosine')


class ConfigError(ValueError):
  """A config value outside what the trainer accepts."""


def _require(ok: bool, field: str, allowed: str, value) -> None:
  if not ok:
    raise ConfigError(f'config.{field} must be {allowed}; got {value!r}')


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError with one line naming the field and what is allowed."""
  # Every device of every process takes an equal share of the global batch.
  devices = jax.device_count()
  _require(config.num_epochs >= 1, 'num_epochs', '>= 1', config.num_epochs)
  _require(config.learning_rate > 0, 'learning_rate', '> 0',
           config.learning_rate)
  _require(config.lr_schedule in LR_SCHEDULES, 'lr_schedule',
           f'one of {", ".join(LR_SCHEDULES)}', config.lr_schedule)
  _require(config.weight_decay >= 0, 'weight_decay', '>= 0',
           config.weight_decay)
  _require(0 <= config.label_smoothing < 1, 'label_smoothing', 'in [0, 1)',
           config.label_smoothing)
  for field in ('batch_size', 'eval_batch_size'):
    value = config[field]
    _require(value >= 1 and value % devices == 0, field,
             f'a positive multiple of the device count ({devices})', value)
  _require(0 <= config.target_test_accuracy <= 1, 'target_test_accuracy',
           'in [0, 1] (0 = train all epochs)', config.target_test_accuracy)
  _require(config.parallelism in parallel.PARALLELISMS, 'parallelism',
           f'one of {", ".join(parallel.PARALLELISMS)}', config.parallelism)
  _require(config.max_checkpoints_to_keep >= 1, 'max_checkpoints_to_keep',
           '>= 1', config.max_checkpoints_to_keep)

  for field, kind in (('activation', 'activation'), ('pooling', 'pooling')):
    name = config.model[field]
    table = registry.names(kind)
    _require(name in table, f'model.{field}', f'one of {", ".join(table)}',
             name)
  model = config.model
  _require(model.kernel_size >= 1 and model.kernel_size % 2 == 1,
           'model.kernel_size', 'an odd number >= 1 (padding keeps the size)',
           model.kernel_size)
  _require(model.pool_window >= 1, 'model.pool_window', '>= 1',
           model.pool_window)
  _require(model.pool_stride >= 1, 'model.pool_stride', '>= 1',
           model.pool_stride)
  _require(0 <= model.pool_padding < model.pool_window, 'model.pool_padding',
           '>= 0 and < model.pool_window', model.pool_padding)

  _require(model.pool_sigma > 0, 'model.pool_sigma', '> 0', model.pool_sigma)

  data = config.data
  _require(data.num_train_examples == -1 or data.num_train_examples >= 1,
           'data.num_train_examples', '-1 (all) or >= 1',
           data.num_train_examples)
  _require(data.random_shift >= 0, 'data.random_shift', '>= 0 (pixels)',
           data.random_shift)
  _require(data.num_validation_examples >= 1, 'data.num_validation_examples',
           '>= 1', data.num_validation_examples)
  if data.manual_dir:
    missing = input_pipeline.missing_manual_files(data.manual_dir)
    _require(not missing, 'data.manual_dir',
             f'a folder holding {", ".join(input_pipeline.MANUAL_FILES)} '
             f'(missing: {", ".join(missing)})', data.manual_dir)
