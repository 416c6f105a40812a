"""Shapes, parameter count and BatchNorm state of the seed's ConvNet."""

import chex
import jax
import jax.numpy as jnp
import pytest

from cnn_jax import models
from cnn_jax import registry
import _util


def _init(model, batch=2):
  x = jnp.zeros((batch, 28, 28, 1))
  return model.init(jax.random.key(0), x, train=False)


def _shapes(model, batch=2):
  """What _init returns, as shapes: traced, with nothing compiled or run."""
  return jax.eval_shape(lambda: _init(model, batch))


def _applied_shapes(model, variables, x, **kwargs):
  """model.apply's outputs, as shapes."""
  return jax.eval_shape(lambda v: model.apply(v, x, **kwargs), variables)


def _count(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


def test_default_model_matches_seed_parameter_count():
  # The seed's PyTorch convnet1 has 29,034 trainable parameters.
  model = models.create_model(_util.tiny_config().model)
  variables = _shapes(model)
  assert _count(variables['params']) == 29_034
  # Running mean and variance of 16 + 32 channels.
  assert _count(variables['batch_stats']) == 2 * (16 + 32)


def test_without_batch_norm_convs_keep_their_bias():
  config = _util.tiny_config().model
  config.batch_norm = False
  variables = _shapes(models.create_model(config))
  assert 'batch_stats' not in variables
  assert _count(variables['params']) == 29_034 - 2 * (16 + 32)  # BatchNorm scale and bias
  assert variables['params']['conv1']['bias'].shape == (16,)


@pytest.mark.parametrize('train', [False, True])
def test_logits_shape(train):
  model = models.CNN(bn_axis_name=None)
  logits, _ = _applied_shapes(model, _shapes(model), jnp.ones((3, 28, 28, 1)),
                              train=train, mutable=['batch_stats'])
  assert logits.shape == (3, 10)


def test_flatten_size_follows_two_poolings():
  variables = _shapes(models.CNN(bn_axis_name=None))
  # 28 -> 14 -> 7 spatially, 32 channels, into 10 classes.
  assert variables['params']['fc']['kernel'].shape == (7 * 7 * 32, 10)


def test_train_mode_updates_batch_stats_eval_mode_does_not():
  model = models.CNN(bn_axis_name=None)
  variables = _init(model, batch=4)
  x = jax.random.normal(jax.random.key(1), (4, 28, 28, 1))
  _, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
  before = variables['batch_stats']['bn1']['mean']
  assert not jnp.allclose(updates['batch_stats']['bn1']['mean'], before)
  _, same = model.apply(variables, x, train=False, mutable=['batch_stats'])
  assert jnp.array_equal(same['batch_stats']['bn1']['mean'], before)


@pytest.mark.parametrize('activation', registry.names('activation'))
@pytest.mark.parametrize('pooling', registry.names('pooling'))
def test_every_registry_entry_builds(activation, pooling):
  config = _util.tiny_config().model
  config.activation, config.pooling = activation, pooling
  model = models.create_model(config, bn_axis_name=None)
  variables = _init(model)
  assert model.apply(variables, jnp.ones((2, 28, 28, 1)),
                     train=False).shape == (2, 10)


def test_tiny_cnn_for_tests():
  variables = _shapes(models._TinyCNN(bn_axis_name=None))
  assert variables['params']['fc']['kernel'].shape == (14 * 14 * 4, 10)


def test_flax_and_cpu_layers_make_one_parameter_tree_and_numbers():
  """model.layers picks an implementation, never another model."""
  config = _util.tiny_config().model
  x = jax.random.uniform(jax.random.key(1), (4, 28, 28, 1))
  models_by_name, variables = {}, {}
  for name in ('flax', 'cpu'):
    config.layers = name
    models_by_name[name] = models.create_model(config, bn_axis_name=None)
    variables[name] = models_by_name[name].init(jax.random.key(0), x,
                                                train=False)
  assert (jax.tree.map(jnp.shape, variables['flax']) ==
          jax.tree.map(jnp.shape, variables['cpu']))
  # Same initializers under the same names: the same initial weights.
  chex.assert_trees_all_close(variables['flax'], variables['cpu'])
  outs = [models_by_name[name].apply(variables['flax'], x, train=True,
                                     mutable=['batch_stats'])
          for name in ('flax', 'cpu')]
  chex.assert_trees_all_close(outs[0], outs[1], atol=1e-4)
  config.layers = 'auto'
  assert models.layer_set_name('auto') == (
      'cpu' if jax.default_backend() == 'cpu' else 'flax')


def _geometry(config):
  return [(g.name, g.window, g.stride, g.side, g.channels, g.receptive_field,
           g.jump) for g in models.receptive_fields(config)]


def test_receptive_fields_of_the_seed_model():
  # r_out = r_in + (k - 1) j_in, j_out = j_in s; sides by the seed's formula.
  assert _geometry(_util.tiny_config().model) == [
      ('input', 1, 1, 28, 1, 1, 1),
      ('conv1', 5, 1, 28, 16, 5, 1),
      ('pool1', 2, 2, 14, 16, 6, 2),
      ('conv2', 5, 1, 14, 32, 14, 2),
      ('pool2', 2, 2, 7, 32, 16, 4),
  ]


def test_receptive_fields_sides_are_the_models_with_overlapping_pools():
  """3x3 windows, stride 2, padding 1 (configs/sweeps/pool_geometry.py)."""
  config = _util.tiny_config().model
  config.pool_window, config.pool_stride, config.pool_padding = 3, 2, 1
  geometry = models.receptive_fields(config)
  assert [(g.receptive_field, g.jump) for g in geometry] == [
      (1, 1), (5, 1), (7, 2), (15, 2), (19, 4)]
  model = models.create_model(config, bn_axis_name=None)
  variables = _shapes(model)
  _, state = _applied_shapes(model, variables, jnp.zeros((1, 28, 28, 1)),
                             train=False, mutable=['intermediates'])
  # Each conv's activation maps, and the pooled map the dense layer reads.
  for name, g in (('act1', geometry[1]), ('act2', geometry[3])):
    assert state['intermediates'][name][0].shape == (1, g.side, g.side,
                                                     g.channels)
  last = geometry[-1]
  assert variables['params']['fc']['kernel'].shape[0] == (
      last.side * last.side * last.channels)


@pytest.mark.parametrize('scaled,layers', [
    ('all', ('conv1', 'conv2', 'fc')), ('conv', ('conv1', 'conv2')),
    ('dense', ('fc',))])
def test_kernel_init_scale_multiplies_the_named_kernels_and_nothing_else(
    scaled, layers):
  config = _util.tiny_config().model
  config.features = (4, 8)
  base = _init(models.create_model(config, bn_axis_name=None))
  config.update(kernel_init_scale=10.0, kernel_init_layers=scaled)
  scaled_params = _init(models.create_model(config, bn_axis_name=None))
  for path, leaf in jax.tree_util.tree_leaves_with_path(base['params']):
    other = scaled_params['params']
    for key in path:
      other = other[key.key]
    hit = path[-1].key == 'kernel' and path[0].key in layers
    chex.assert_trees_all_close(other, leaf * (10.0 if hit else 1.0),
                                rtol=1e-5)


@pytest.mark.parametrize('layers', ['flax', 'cpu'])
def test_strided_convs_without_pooling_keep_the_pooled_sizes(layers):
  config = _util.tiny_config().model
  config.update(layers=layers, pooling='subsample', conv_stride=2, pool_window=1,
                pool_stride=1)
  assert models.feature_map_sides(config, 28) == [14, 7]
  model = models.create_model(config, bn_axis_name=None)
  _, state = _applied_shapes(model, _shapes(model), jnp.ones((2, 28, 28, 1)),
                             train=False, mutable=['intermediates'])
  chex.assert_shape(state['intermediates']['act1'][0], (2, 14, 14, 16))
  chex.assert_shape(state['intermediates']['features'][0], (2, 7 * 7 * 32))
  # The receptive field grows by the stride instead of a pool.
  assert [g.receptive_field for g in models.receptive_fields(config)] == [
      1, 5, 5, 13, 13]


def test_strided_conv_layer_sets_agree():
  config = _util.tiny_config().model
  config.update(pooling='subsample', conv_stride=2, pool_window=1, pool_stride=1)
  x = jax.random.uniform(jax.random.key(1), (4, 28, 28, 1))
  outs = []
  for name in ('flax', 'cpu'):
    config.layers = name
    model = models.create_model(config, bn_axis_name=None)
    variables = model.init(jax.random.key(0), x, train=False)
    outs.append(model.apply(variables, x, train=False))
  chex.assert_trees_all_close(outs[0], outs[1], atol=1e-4)


def test_features_are_what_the_dense_layer_reads():
  model = models.create_model(_util.tiny_config().model, bn_axis_name=None)
  variables = _init(model)
  x = jax.random.uniform(jax.random.key(2), (3, 28, 28, 1))
  logits, state = model.apply(variables, x, train=False,
                              mutable=['intermediates'])
  fc = variables['params']['fc']
  features = state['intermediates']['features'][0]
  chex.assert_trees_all_close(features @ fc['kernel'] + fc['bias'], logits,
                              atol=1e-5)
