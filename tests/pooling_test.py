"""Pooling against a plain NumPy reference, and the seed's size formula."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax import pooling


def _reference(x, window, stride, padding, reduce, pad_value):
  x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)),
             constant_values=pad_value)
  b, h, w, c = x.shape
  oh, ow = (h - window) // stride + 1, (w - window) // stride + 1
  out = np.empty((b, oh, ow, c), x.dtype)
  for i, j in itertools.product(range(oh), range(ow)):
    patch = x[:, i * stride:i * stride + window, j * stride:j * stride + window]
    out[:, i, j] = reduce(patch.reshape(b, -1, c))
  return out


CASES = [  # (size, window, stride, padding)
    (28, 2, 2, 0), (7, 2, 2, 0), (9, 3, 2, 1), (6, 3, 1, 0), (5, 2, 2, 1),
    (8, 3, 3, 1),
]


@pytest.mark.parametrize('size,window,stride,padding', CASES)
def test_max_pool_matches_numpy(size, window, stride, padding):
  x = np.random.RandomState(size).randn(2, size, size + 1, 3).astype(np.float32)
  got = pooling.max_pool(jnp.asarray(x), window, stride, padding)
  want = _reference(x, window, stride, padding, lambda p: p.max(1), -np.inf)
  np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize('size,window,stride,padding', CASES)
def test_output_size_is_the_seed_formula(size, window, stride, padding):
  x = jnp.zeros((1, size, size, 1))
  out = pooling.max_pool(x, window, stride, padding)
  expected = (size - window + 2 * padding) // stride + 1
  assert pooling.output_size(size, window, stride, padding) == expected
  assert out.shape == (1, expected, expected, 1)


def test_max_pool_gradient_goes_to_the_maximum():
  x = jnp.array([1., 5., 2., 3.]).reshape(1, 2, 2, 1)
  grad = jax.grad(lambda x: pooling.max_pool(x).sum())(x)
  np.testing.assert_array_equal(grad.ravel(), [0., 1., 0., 0.])
