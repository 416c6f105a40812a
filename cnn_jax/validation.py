"""Checks a config before anything is written, naming the field at fault.

A run that fails here leaves no workdir behind, so no later reader can take
a half-made folder for a result. Every numeric field has its limits here,
including the ones that would pass the type check and crash later (a pool
window larger than the feature map, a validation split larger than the
data) or quietly train something else (a class count the data do not have).
"""

import math
import os
from typing import Any

import jax
import ml_collections

from cnn_jax import errors
from cnn_jax import input_pipeline
from cnn_jax import models
from cnn_jax import parallel
from cnn_jax import registry

LR_SCHEDULES = ('constant', 'cosine')
EPOCH_LOOPS = ('auto', 'scan', 'python')
# jax.random.key takes any integer; int32's range keeps every backend happy.
MAX_SEED = 2**31 - 1


class ConfigError(errors.UserError, ValueError):
  """A config value outside what the trainer accepts."""


def shown(value: Any) -> str:
  """A value as the user typed it: strings bare, other values as Python."""
  return value if isinstance(value, str) else repr(value)


def _require(ok: bool, field: str, allowed: str, value: Any) -> None:
  if not ok:
    raise ConfigError(f'config.{field} must be {allowed}; got {shown(value)}')


def _finite(x: Any) -> bool:
  return isinstance(x, (int, float)) and math.isfinite(x)


def _is_int(x: Any) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError with one line naming the field and what is allowed."""
  _check_training(config)
  _check_data(config.data)
  _check_model(config.model, config.data)
  _check_sizes(config)


def _check_training(config: ml_collections.ConfigDict) -> None:
  # Every device of every process takes an equal share of the global batch.
  devices = jax.device_count()
  _require(_is_int(config.seed) and 0 <= config.seed <= MAX_SEED, 'seed',
           f'an integer in [0, {MAX_SEED}]', config.seed)
  _require(config.num_epochs >= 1, 'num_epochs', '>= 1', config.num_epochs)
  _require(_finite(config.learning_rate) and config.learning_rate > 0,
           'learning_rate', 'a finite number > 0', config.learning_rate)
  _require(config.lr_schedule in LR_SCHEDULES, 'lr_schedule',
           f'one of {", ".join(LR_SCHEDULES)}', config.lr_schedule)
  _require(_finite(config.weight_decay) and config.weight_decay >= 0,
           'weight_decay', 'a finite number >= 0', config.weight_decay)
  _require(0 <= config.label_smoothing < 1, 'label_smoothing', 'in [0, 1)',
           config.label_smoothing)
  for field in ('batch_size', 'eval_batch_size'):
    value = config[field]
    _require(value >= 1 and value % devices == 0, field,
             f'a positive multiple of the device count ({devices})', value)
  _require(0 <= config.target_test_accuracy <= 1, 'target_test_accuracy',
           'in [0, 1] (0 = train all epochs)', config.target_test_accuracy)
  _require(config.max_train_loss > 0, 'max_train_loss',
           '> 0 (inf = never call a run diverged)', config.max_train_loss)
  _require(config.parallelism in parallel.PARALLELISMS, 'parallelism',
           f'one of {", ".join(parallel.PARALLELISMS)}', config.parallelism)
  _require(config.epoch_loop in EPOCH_LOOPS, 'epoch_loop',
           f'one of {", ".join(EPOCH_LOOPS)}', config.epoch_loop)
  _require(config.max_checkpoints_to_keep >= 1, 'max_checkpoints_to_keep',
           '>= 1', config.max_checkpoints_to_keep)
  _require(_finite(config.checkpoint_interval_s)
           and config.checkpoint_interval_s >= 0, 'checkpoint_interval_s',
           'a finite number of seconds >= 0 (0 = every epoch)',
           config.checkpoint_interval_s)


def _check_data(data: ml_collections.ConfigDict) -> None:
  _require(data.dataset in input_pipeline.DATASETS, 'data.dataset',
           f'one of {", ".join(input_pipeline.DATASETS)} (the model reads '
           f'28x28 grey images)', data.dataset)
  side = input_pipeline.IMAGE_SHAPE[0]
  _require(0 <= data.random_shift < side, 'data.random_shift',
           f'in [0, {side}) pixels', data.random_shift)
  if data.manual_dir:
    missing = input_pipeline.missing_manual_files(
        os.path.expanduser(data.manual_dir))
    _require(not missing, 'data.manual_dir',
             f'a folder holding {", ".join(input_pipeline.MANUAL_FILES)} '
             f'(missing: {", ".join(missing)})', data.manual_dir)


def _check_model(model: ml_collections.ConfigDict,
                 data: ml_collections.ConfigDict) -> None:
  for field, kind in (('activation', 'activation'), ('pooling', 'pooling'),
                      ('layers', 'layers')):
    name = model[field]
    table = registry.names(kind) + (['auto'] if kind == 'layers' else [])
    _require(name in table, f'model.{field}', f'one of {", ".join(table)}',
             name)
  classes = input_pipeline.DATASETS[data.dataset].num_classes
  _require(model.num_classes == classes, 'model.num_classes',
           f'{classes}, the class count of {data.dataset}', model.num_classes)
  features = tuple(model.features)
  _require(len(features) >= 1 and all(_is_int(f) and f >= 1
                                      for f in features),
           'model.features', 'one or more filter counts, each >= 1',
           features)
  side = input_pipeline.IMAGE_SHAPE[0]
  _require(1 <= model.kernel_size <= side and model.kernel_size % 2 == 1,
           'model.kernel_size',
           f'an odd number in [1, {side}] (padding keeps the size)',
           model.kernel_size)
  _require(model.pool_window >= 1, 'model.pool_window', '>= 1',
           model.pool_window)
  _require(model.pool_stride >= 1, 'model.pool_stride', '>= 1',
           model.pool_stride)
  _require(0 <= model.pool_padding < model.pool_window, 'model.pool_padding',
           '>= 0 and < model.pool_window', model.pool_padding)
  _require(_finite(model.pool_sigma) and model.pool_sigma > 0,
           'model.pool_sigma', 'a finite number > 0', model.pool_sigma)
  _require(_is_int(model.conv_stride) and 1 <= model.conv_stride <= side,
           'model.conv_stride', f'an integer in [1, {side}]',
           model.conv_stride)
  _require(_finite(model.kernel_init_scale) and model.kernel_init_scale > 0,
           'model.kernel_init_scale', 'a finite number > 0',
           model.kernel_init_scale)
  _require(model.kernel_init_layers in models.KERNEL_INIT_LAYERS,
           'model.kernel_init_layers',
           f'one of {", ".join(models.KERNEL_INIT_LAYERS)}',
           model.kernel_init_layers)
  # Layer by layer: each pool's window must fit its padded input.
  sides = models.feature_map_sides(model, side)
  if sides[-1] < 1:
    stage = len(sides)
    before = sides[-2] if stage > 1 else side
    raise ConfigError(
        f'config.model.pool_window ({model.pool_window}) does not fit stage '
        f'{stage} of {len(features)}: its input is {before}x{before} '
        f'(padding {model.pool_padding}); use a smaller window or fewer '
        f'model.features')


def _check_sizes(config: ml_collections.ConfigDict) -> None:
  """The splits a run would cut from the dataset must each hold something."""
  data = config.data
  total = input_pipeline.DATASETS[data.dataset].num_train
  _require(1 <= data.num_validation_examples < total,
           'data.num_validation_examples',
           f'in [1, {total}), cut from the {total} training examples',
           data.num_validation_examples)
  available = total - data.num_validation_examples
  _require(data.num_train_examples == -1
           or 1 <= data.num_train_examples <= available,
           'data.num_train_examples',
           f'-1 (all) or in [1, {available}], the training examples left '
           f'after validation', data.num_train_examples)
  train = available if data.num_train_examples == -1 else (
      data.num_train_examples)
  _require(config.batch_size <= train, 'batch_size',
           f'<= the {train} training examples', config.batch_size)
