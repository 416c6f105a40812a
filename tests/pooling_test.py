"""Pooling against a plain NumPy reference, and the seed's size formula."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax import pooling
from cnn_jax import registry


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


def _gaussian_reference(window, sigma):
  """Weights by a double loop over the window, straight from the definition."""
  centre = (window - 1) / 2
  w = np.array([[np.exp(-((i - centre) ** 2 + (j - centre) ** 2)
                        / (2 * sigma ** 2)) for j in range(window)]
                for i in range(window)]).reshape(-1)
  return w / w.sum()


def _numpy_pool(name, x, window, stride, padding, sigma):
  if name == 'max':
    return _reference(x, window, stride, padding, lambda p: p.max(1), -np.inf)
  if name == 'avg':
    return _reference(x, window, stride, padding, lambda p: p.mean(1), 0.0)
  if name == 'subsample':
    return _reference(x, window, stride, padding, lambda p: p[:, 0], 0.0)
  if name == 'l2':
    return _reference(x, window, stride, padding,
                      lambda p: np.sqrt((p ** 2).sum(1)), 0.0)
  w = _gaussian_reference(window, sigma)
  return _reference(x, window, stride, padding,
                    lambda p: np.einsum('bkc,k->bc', p, w), 0.0)


@pytest.mark.parametrize('name', sorted(registry.POOLS))
@pytest.mark.parametrize('size,window,stride,padding', CASES)
def test_pool_matches_numpy(name, size, window, stride, padding):
  x = np.random.RandomState(size).randn(2, size, size + 1, 3).astype(np.float32)
  got = registry.lookup('pooling', name)(jnp.asarray(x), window, stride,
                                         padding, sigma=0.8)
  want = _numpy_pool(name, x, window, stride, padding, 0.8)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('name', sorted(registry.POOLS))
def test_pool_gradients_are_finite_even_on_zero_windows(name):
  # Post-ReLU maps are often all zero in a window: L2's sqrt must not NaN.
  x = jnp.asarray(np.random.RandomState(0).randn(2, 7, 7, 3), jnp.float32)
  x = jnp.maximum(x, 0).at[:, :4, :4, :].set(0.0)
  pool = registry.lookup('pooling', name)
  grad = jax.grad(lambda x: pool(x, 3, 2, 1).sum())(x)
  assert jnp.all(jnp.isfinite(grad))
  assert jnp.any(grad != 0)


def test_gaussian_weights_fall_with_distance_and_sum_to_one():
  w = np.asarray(pooling.gaussian_weights(3, 1.0)).reshape(3, 3)
  np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-6)
  assert w[1, 1] > w[0, 1] > w[0, 0]
  np.testing.assert_allclose(w, _gaussian_reference(3, 1.0).reshape(3, 3),
                             rtol=1e-6)
  # A wide Gaussian is the plain average.
  np.testing.assert_allclose(pooling.gaussian_weights(2, 1e4), [0.25] * 4,
                             rtol=1e-6)


@pytest.mark.parametrize('name', sorted(registry.POOLS))
@pytest.mark.parametrize('size', [5, 6, 7, 14, 28])
@pytest.mark.parametrize('window,stride,padding', [
    (2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 0), (4, 3, 2), (5, 5, 2)])
def test_output_size_is_the_seed_formula(name, size, window, stride, padding):
  # Shapes are fixed when the pool is traced: nothing to compile or run.
  x = jax.ShapeDtypeStruct((1, size, size + 2, 1), jnp.float32)
  out = jax.eval_shape(
      lambda x: registry.lookup('pooling', name)(x, window, stride, padding), x)
  rows = (size - window + 2 * padding) // stride + 1
  cols = (size + 2 - window + 2 * padding) // stride + 1
  assert pooling.output_size(size, window, stride, padding) == rows
  assert out.shape == (1, rows, cols, 1)


def test_max_pool_gradient_goes_to_the_maximum():
  x = jnp.array([1., 5., 2., 3.]).reshape(1, 2, 2, 1)
  grad = jax.grad(lambda x: pooling.max_pool(x).sum())(x)
  np.testing.assert_array_equal(grad.ravel(), [0., 1., 0., 0.])


def test_subsample_in_one_pixel_windows_is_no_pooling():
  x = jnp.asarray(np.random.RandomState(1).randn(2, 7, 7, 3), jnp.float32)
  np.testing.assert_array_equal(pooling.subsample(x, 1, 1, 0), x)
