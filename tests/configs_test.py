"""The default config: the seed's recipe, accepted by the checks."""

import jax
import pytest

from configs import default
from configs import fast
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


@pytest.mark.parametrize('field,value,words', [
    ('num_epochs', 0, 'config.num_epochs must be >= 1'),
    ('learning_rate', 0.0, 'config.learning_rate must be > 0'),
    ('batch_size', 3, 'multiple of the device count (2)'),
    ('lr_schedule', 'step', 'config.lr_schedule must be one of'),
    ('model.activation', 'swish', 'config.model.activation must be one of'),
    ('model.pooling', 'median', 'config.model.pooling must be one of'),
    ('data.num_train_examples', 0, 'config.data.num_train_examples'),
    ('data.random_shift', -1, 'config.data.random_shift must be >= 0'),
    ('model.pool_sigma', 0.0, 'config.model.pool_sigma must be > 0'),
    ('data.manual_dir', '/nonexistent', 'config.data.manual_dir must be'),
    ('target_test_accuracy', 1.5, 'config.target_test_accuracy must be in'),
    ('model.kernel_size', 4, 'config.model.kernel_size must be an odd number'),
])
def test_each_bad_value_names_its_field(field, value, words):
  assert jax.local_device_count() == 2
  config = default.get_config()
  *parents, leaf = field.split('.')
  node = config
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(validation.ConfigError) as e:
    validation.check_config(config)
  assert words in str(e.value)
  assert '\n' not in str(e.value)


def test_fast_config_keeps_the_architecture_and_passes_the_checks():
  config, seed = fast.get_config(), default.get_config()
  assert config.model.to_dict() == seed.model.to_dict()
  assert config.target_test_accuracy == 0.0  # The benchmark sets it.
  validation.check_config(config)
