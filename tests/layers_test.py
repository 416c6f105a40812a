"""layers.Conv is nn.Conv: same variables, outputs and gradients."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from cnn_jax import layers


@pytest.mark.parametrize('channels,kernel_size', [(1, 5), (3, 5), (1, 3)])
def test_conv_equals_flax_conv(channels, kernel_size):
  ours = layers.Conv(features=4, kernel_size=kernel_size)
  flax_conv = nn.Conv(4, (kernel_size, kernel_size), padding='SAME')
  x = jax.random.normal(jax.random.key(1), (2, 9, 7, channels))
  variables = ours.init(jax.random.key(0), x)
  # Same initializers, same names: the same key gives the same parameters.
  chex.assert_trees_all_equal(variables, flax_conv.init(jax.random.key(0), x))
  variables = {'params': {
      'kernel': variables['params']['kernel'],
      'bias': jax.random.normal(jax.random.key(2), (4,))}}
  chex.assert_trees_all_close(ours.apply(variables, x),
                              flax_conv.apply(variables, x),
                              atol=1e-5, rtol=1e-5)

  def loss(module, v, x):
    return jnp.sum(jnp.sin(module.apply(v, x)))

  ours_grads = jax.grad(loss, argnums=(1, 2))(ours, variables, x)
  flax_grads = jax.grad(loss, argnums=(1, 2))(flax_conv, variables, x)
  chex.assert_trees_all_close(ours_grads, flax_grads, atol=1e-4, rtol=1e-4)


def test_one_channel_conv_under_vmap_equals_each_seed():
  conv = layers.Conv(features=3, kernel_size=5)
  x = jax.random.normal(jax.random.key(0), (2, 4, 8, 8, 1))
  variables = jax.vmap(conv.init)(jax.random.split(jax.random.key(1), 2), x)
  together = jax.vmap(conv.apply)(variables, x)
  for k in range(2):
    chex.assert_trees_all_close(
        together[k], conv.apply(jax.tree.map(lambda v: v[k], variables), x[k]),
        atol=1e-5, rtol=1e-5)


def _bn_pair(axis_name=None):
  kwargs = dict(momentum=0.9, epsilon=1e-5, axis_name=axis_name)
  return (lambda train: layers.BatchNorm(use_running_average=not train,
                                         **kwargs),
          lambda train: nn.BatchNorm(use_running_average=not train, **kwargs))


def test_batch_norm_equals_flax_batch_norm():
  ours, theirs = _bn_pair()
  x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (4, 5, 5, 6))
  variables = ours(True).init(jax.random.key(1), x)
  chex.assert_trees_all_equal(variables,
                              theirs(True).init(jax.random.key(1), x))
  variables = {'params': {'scale': jnp.linspace(0.5, 2.0, 6),
                          'bias': jnp.linspace(-1.0, 1.0, 6)},
               'batch_stats': variables['batch_stats']}
  # Training: batch statistics, and the same running-average update.
  y1, s1 = ours(True).apply(variables, x, mutable=['batch_stats'])
  y2, s2 = theirs(True).apply(variables, x, mutable=['batch_stats'])
  chex.assert_trees_all_close(y1, y2, atol=1e-5, rtol=1e-5)
  chex.assert_trees_all_close(s1, s2, atol=1e-6, rtol=1e-6)
  assert not jnp.allclose(s1['batch_stats']['mean'], 0.0)
  # Evaluation: the running statistics.
  variables = dict(variables, **s1)
  chex.assert_trees_all_close(ours(False).apply(variables, x),
                              theirs(False).apply(variables, x),
                              atol=1e-5, rtol=1e-5)

  def loss(make, params, x):
    y, _ = make(True).apply(dict(variables, params=params), x,
                            mutable=['batch_stats'])
    return jnp.sum(jnp.sin(y))

  chex.assert_trees_all_close(
      jax.grad(loss, argnums=(1, 2))(ours, variables['params'], x),
      jax.grad(loss, argnums=(1, 2))(theirs, variables['params'], x),
      atol=1e-4, rtol=1e-4)


def test_batch_norm_averages_statistics_over_the_mapped_axis():
  assert jax.local_device_count() == 2, 'conftest forces two CPU devices'
  ours, theirs = _bn_pair(axis_name='batch')
  x = jax.random.normal(jax.random.key(0), (2, 3, 4, 4, 5))
  x = x.at[1].add(5.0)  # The two devices' halves differ.
  variables = ours(True).init(jax.random.key(1), x[0])

  def run(make):
    return jax.pmap(
        lambda v, x: make(True).apply(v, x, mutable=['batch_stats']),
        axis_name='batch', in_axes=(None, 0))(variables, x)

  (y1, s1), (y2, s2) = run(ours), run(theirs)
  chex.assert_trees_all_close(y1, y2, atol=1e-5, rtol=1e-5)
  chex.assert_trees_all_close(s1, s2, atol=1e-6, rtol=1e-6)
  # Both devices hold the statistics of the whole batch.
  chex.assert_trees_all_close(jax.tree.map(lambda s: s[0], s1),
                              jax.tree.map(lambda s: s[1], s1))
