"""The name tables that configs use to pick parts."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax import registry


def test_lookup_returns_registered_part():
  assert registry.lookup('activation', 'relu') is registry.ACTIVATIONS['relu']
  assert registry.lookup('pooling', 'max') is registry.POOLS['max']


@pytest.mark.parametrize('kind', ['activation', 'pooling'])
def test_unknown_name_lists_the_allowed_ones(kind):
  with pytest.raises(KeyError) as e:
    registry.lookup(kind, 'nope')
  for name in registry.names(kind):
    assert name in str(e.value)


def test_seed_parts_are_registered():
  assert 'relu' in registry.names('activation')
  assert 'max' in registry.names('pooling')


FORMULAS = {
    'sigmoid': lambda x: 1 / (1 + np.exp(-x)),
    'tanh': np.tanh,
    'relu': lambda x: np.maximum(x, 0),
    'leaky_relu': lambda x: np.where(x > 0, x, 0.01 * x),
    'elu': lambda x: np.where(x > 0, x, np.expm1(x)),
    'gelu': lambda x: 0.5 * x * (1 + scipy_erf(x / np.sqrt(2))),
    'silu': lambda x: x / (1 + np.exp(-x)),
}


def scipy_erf(x):
  return np.vectorize(math.erf)(x)


def test_every_activation_has_a_formula_test():
  assert set(FORMULAS) == set(registry.names('activation'))


@pytest.mark.parametrize('name', sorted(FORMULAS))
def test_activation_matches_its_formula(name):
  x = np.linspace(-6, 6, 101).astype(np.float32)
  got = registry.lookup('activation', name)(jnp.asarray(x))
  np.testing.assert_allclose(got, FORMULAS[name](x.astype(np.float64)),
                             rtol=1e-5, atol=1e-6)


def test_seed_pools_are_registered():
  assert {'max', 'avg', 'l2', 'gaussian'} <= set(registry.names('pooling'))
