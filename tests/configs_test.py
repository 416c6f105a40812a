"""The default config: the seed's recipe, accepted by the checks."""

import importlib

import jax
import pytest

from configs import default
from configs import fast
from configs import seed_recipe
from cnn_jax import cli
from cnn_jax import errors
from cnn_jax import models
from cnn_jax import sweep
from cnn_jax import validation


def test_default_is_the_seed_recipe():
  config = default.get_config()
  assert config.learning_rate == 1e-3
  assert config.model.activation == 'relu'
  assert config.model.pooling == 'max'
  assert config.model.batch_norm
  assert tuple(config.model.features) == (16, 32)
  assert config.model.kernel_size == 5
  assert (config.model.pool_window, config.model.pool_stride,
          config.model.pool_padding) == (2, 2, 0)


def test_default_passes_the_checks():
  validation.check_config(default.get_config())


INF, NAN = float('inf'), float('nan')

# Every field at and past its limits: each must be refused by name before
# anything runs, not crash later or train something else.
BAD_VALUES = [
    ('seed', -1, 'an integer in [0, 2147483647]'),
    ('seed', 2**31, 'an integer in [0, 2147483647]'),
    ('num_epochs', 0, '>= 1'),
    ('learning_rate', 0.0, 'a finite number > 0'),
    ('learning_rate', INF, 'a finite number > 0; got inf'),
    ('learning_rate', NAN, 'a finite number > 0; got nan'),
    ('weight_decay', -0.1, 'a finite number >= 0'),
    ('weight_decay', INF, 'a finite number >= 0'),
    ('label_smoothing', 1.0, 'in [0, 1)'),
    ('label_smoothing', -0.1, 'in [0, 1)'),
    ('batch_size', 3, 'a positive multiple of the device count (2)'),
    ('batch_size', 0, 'a positive multiple of the device count (2)'),
    ('batch_size', 55002, '<= the 55000 training examples'),
    ('eval_batch_size', 0, 'a positive multiple of the device count (2)'),
    ('lr_schedule', 'step', 'one of constant, cosine; got step'),
    ('target_test_accuracy', 1.5, 'in [0, 1]'),
    ('max_train_loss', 0.0, '> 0 (inf = never'),
    ('max_checkpoints_to_keep', 0, '>= 1'),
    ('checkpoint_interval_s', -1.0, 'a finite number of seconds >= 0'),
    ('checkpoint_interval_s', INF, 'a finite number of seconds >= 0'),
    ('parallelism', 'pjit', 'one of pmap, shard_map; got pjit'),
    ('model.activation', 'swish', 'one of '),
    ('model.pooling', 'median', 'one of avg, gaussian, l2, max, subsample'),
    ('model.conv_stride', 0, 'an integer in [1, 28]'),
    ('model.conv_stride', 29, 'an integer in [1, 28]'),
    ('model.kernel_init_scale', 0.0, 'a finite number > 0'),
    ('model.kernel_init_scale', INF, 'a finite number > 0'),
    ('model.kernel_init_layers', 'fc', 'one of all, conv, dense; got fc'),
    ('model.num_classes', 5, '10, the class count of fashion_mnist'),
    ('model.features', (), 'one or more filter counts, each >= 1'),
    ('model.features', (16, 0), 'one or more filter counts, each >= 1'),
    ('model.kernel_size', 4, 'an odd number in [1, 28]'),
    ('model.kernel_size', 29, 'an odd number in [1, 28]'),
    ('model.kernel_size', -1, 'an odd number in [1, 28]'),
    ('model.pool_window', 0, '>= 1'),
    ('model.pool_stride', 0, '>= 1'),
    ('model.pool_padding', 2, '>= 0 and < model.pool_window'),
    ('model.pool_padding', -1, '>= 0 and < model.pool_window'),
    ('model.pool_sigma', 0.0, 'a finite number > 0'),
    ('model.pool_sigma', INF, 'a finite number > 0'),
    ('data.dataset', 'fashon_mnist', 'one of fashion_mnist'),
    ('data.num_validation_examples', 0, 'in [1, 60000)'),
    ('data.num_validation_examples', 60000, 'in [1, 60000)'),
    ('data.num_train_examples', 0, '-1 (all) or in [1, 55000]'),
    ('data.num_train_examples', 55001, '-1 (all) or in [1, 55000]'),
    ('data.random_shift', -1, 'in [0, 28) pixels'),
    ('data.random_shift', 28, 'in [0, 28) pixels'),
    ('data.manual_dir', '/nonexistent', 'a folder holding'),
]


def _set(config, field, value):
  *parents, leaf = field.split('.')
  node = config
  for p in parents:
    node = node[p]
  node[leaf] = value


@pytest.mark.parametrize('field,value,words', BAD_VALUES)
def test_each_bad_value_names_its_field(field, value, words):
  assert jax.local_device_count() == 2
  config = default.get_config()
  _set(config, field, value)
  with pytest.raises(validation.ConfigError) as e:
    validation.check_config(config)
  message = str(e.value)
  assert message.startswith(f'config.{field} must be {words}'), message
  assert '\n' not in message and "'" not in message


def test_a_pool_window_that_does_not_fit_names_the_stage():
  config = default.get_config()
  config.model.update(pool_window=6, pool_stride=6, pool_padding=0)
  # 28 -> 4 -> nothing: the second stage's input is smaller than the window.
  with pytest.raises(validation.ConfigError,
                     match=r'pool_window \(6\) does not fit stage 2 of 2: '
                           r'its input is 4x4'):
    validation.check_config(config)
  config.model.features = (16,)  # One stage: it fits.
  validation.check_config(config)


def test_the_seeds_pooling_geometry_keeps_the_default_sizes():
  config = default.get_config()
  assert models.feature_map_sides(config.model, 28) == [14, 7]
  config.model.update(pool_window=3, pool_stride=2, pool_padding=1)
  assert models.feature_map_sides(config.model, 28) == [14, 7]
  validation.check_config(config)


@pytest.mark.parametrize('name', ['activation_pooling', 'batch_norm', 'seeds',
                                  'pool_geometry'])
def test_every_sweep_config_passes_the_checks(name):
  module = importlib.import_module(f'configs.sweeps.{name}')
  sweep.check_sweep(module.get_sweep())
  for point in sweep.points(module.get_sweep()['axes']):
    validation.check_config(sweep.point_config(module.get_config(), point))


@pytest.mark.parametrize('name', ['relu_speed', 'translation', 'bn_init',
                                  'bn_init_layers'])
def test_every_claim_config_passes_the_checks(name):
  module = importlib.import_module(f'configs.claims.{name}')
  sweep.check_sweep(module.get_sweep())
  for point in sweep.points(module.get_sweep()['axes']):
    validation.check_config(sweep.point_config(module.get_config(), point))


def test_fast_config_keeps_the_architecture_and_passes_the_checks():
  config, seed = fast.get_config(), default.get_config()
  assert config.model.to_dict() == seed.model.to_dict()
  assert config.target_test_accuracy == 0.0  # The benchmark sets it.
  validation.check_config(config)


def test_seed_recipe_is_plain_adam_without_augmentation():
  config = seed_recipe.get_config()
  assert config.learning_rate == 1e-3 and config.lr_schedule == 'constant'
  assert config.weight_decay == 0.0 and config.label_smoothing == 0.0
  assert not config.data.random_flip and config.data.random_shift == 0
  assert config.model.to_dict() == default.get_config().model.to_dict()
  validation.check_config(config)


# A config file whose get_config() fails, and what the one error line says.
BAD_GET_CONFIGS = [
    ('raise ValueError("no such variant")',
     'get_config() raised ValueError: no such variant'),
    # KeyError and OSError once read as an unknown field, or were deferred
    # to a traceback at the config's first use.
    ('raise KeyError("model")', "get_config() raised KeyError: 'model'"),
    ('raise OSError("gone")', 'get_config() raised OSError: gone'),
    ('return None', 'get_config() returned None; it must return a '
                    'ml_collections.ConfigDict'),
    ('return {"seed": 0}', 'get_config() returned dict; it must return a '
                           'ml_collections.ConfigDict'),
]


@pytest.mark.parametrize('body,words', BAD_GET_CONFIGS)
def test_a_get_config_that_fails_is_named_in_one_line(tmp_path, body, words):
  path = tmp_path / 'my_config.py'
  path.write_text(f'def get_config():\n  {body}\n')
  with pytest.raises(errors.UserError) as e:
    cli.load_config(str(path))
  assert str(e.value) == f'--config: {path}: {words}'


def test_a_config_argument_after_a_colon_reaches_get_config(tmp_path):
  """As ml_collections reads --config=FILE:ARG."""
  path = tmp_path / 'my_config.py'
  path.write_text('from configs import default\n'
                  'def get_config(epochs):\n'
                  '  config = default.get_config()\n'
                  '  config.num_epochs = int(epochs)\n'
                  '  return config\n')
  assert cli.load_config(f'{path}:7').num_epochs == 7
  with pytest.raises(errors.UserError, match='raised ValueError: invalid '
                                             'literal for int'):
    cli.load_config(f'{path}:seven')
