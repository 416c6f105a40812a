"""The name tables that configs use to pick parts."""

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
