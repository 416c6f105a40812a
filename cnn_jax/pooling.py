"""Pooling over square windows, written as strided slices and a reduction.

Every pool here is a reduction over the same window view, so all of them share
one output-size rule, the seed's floor((W - F + 2P) / S) + 1. The view is a
reshape (non-overlapping windows) or strided slices (overlapping ones); both
keep the backward pass cheap, where `flax.linen.max_pool`'s gradient lowers
to XLA's select-and-scatter, slow on CPU (docs/performance.md).
"""

import jax.numpy as jnp


def output_size(size: int, window: int, stride: int, padding: int) -> int:
  """The seed's formula floor((W - F + 2P) / S) + 1."""
  return (size - window + 2 * padding) // stride + 1


def windows(x: jnp.ndarray, window: int, stride: int, padding: int,
            pad_value: float = 0.0) -> jnp.ndarray:
  """Gathers every window of an NHWC batch.

  Args:
    x: [batch, height, width, channels].
    window: F, the side of the square window.
    stride: S, the step between windows.
    padding: P, added on each side of both spatial axes with `pad_value`.
    pad_value: what the padding holds (-inf for max, 0 for sums).

  Returns:
    [batch, out_height, out_width, F * F, channels].
  """
  if padding:
    pads = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    x = jnp.pad(x, pads, constant_values=pad_value)
  batch, height, width, channels = x.shape
  out_h = (height - window) // stride + 1
  out_w = (width - window) // stride + 1
  if stride == window:
    x = x[:, :out_h * window, :out_w * window, :]
    x = x.reshape(batch, out_h, window, out_w, window, channels)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, out_h, out_w, window * window, channels)
  views = [
      x[:, i:i + stride * (out_h - 1) + 1:stride,
        j:j + stride * (out_w - 1) + 1:stride, :]
      for i in range(window) for j in range(window)
  ]
  return jnp.stack(views, axis=3)


# Every pool takes (x, window, stride, padding, sigma) so that the model can
# bind them the same way; `sigma` matters only to the Gaussian pool.


def max_pool(x: jnp.ndarray, window: int = 2, stride: int = 2,
             padding: int = 0, sigma: float = 1.0) -> jnp.ndarray:
  """The largest value of each window; padding never wins."""
  del sigma
  return windows(x, window, stride, padding, -jnp.inf).max(axis=3)


def avg_pool(x: jnp.ndarray, window: int = 2, stride: int = 2,
             padding: int = 0, sigma: float = 1.0) -> jnp.ndarray:
  """The mean of each window, padding zeros included (PyTorch's default)."""
  del sigma
  return windows(x, window, stride, padding).mean(axis=3)


def l2_pool(x: jnp.ndarray, window: int = 2, stride: int = 2,
            padding: int = 0, sigma: float = 1.0) -> jnp.ndarray:
  """The L2 norm of each window: sqrt of the sum of squares.

  After a ReLU whole windows are often 0, where sqrt's derivative is
  infinite; the double `where` gives those windows a zero gradient instead
  of NaN.
  """
  del sigma
  sq = jnp.square(windows(x, window, stride, padding)).sum(axis=3)
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def gaussian_weights(window: int, sigma: float) -> jnp.ndarray:
  """[F * F] weights exp(-d^2 / (2 sigma^2)) of the distance d to the centre."""
  offsets = jnp.arange(window) - (window - 1) / 2
  d2 = offsets[:, None] ** 2 + offsets[None, :] ** 2
  w = jnp.exp(-d2 / (2 * sigma ** 2)).reshape(-1)
  return w / w.sum()


def gaussian_pool(x: jnp.ndarray, window: int = 2, stride: int = 2,
                  padding: int = 0, sigma: float = 1.0) -> jnp.ndarray:
  """A weighted average whose weights fall with distance from the centre.

  The seed's "weighted average based on the distance from the center pixel";
  the weights are Gaussian with width `sigma` pixels and sum to 1, so a large
  sigma tends to the plain average. In the seed's 2x2 windows all four
  pixels are equally far from the centre, so this equals `avg_pool` there:
  odd windows (3x3, stride 2, padding 1 keeps the sizes) show the difference.
  """
  weights = gaussian_weights(window, sigma).astype(x.dtype)
  return jnp.einsum('bhwkc,k->bhwc', windows(x, window, stride, padding),
                    weights)


def subsample(x: jnp.ndarray, window: int = 2, stride: int = 2,
              padding: int = 0, sigma: float = 1.0) -> jnp.ndarray:
  """The first (top-left) pixel of each window: downsampling that pools
  nothing. Window 1 and stride 1 leave the input as it is, the model
  without pooling (with strided convs, the translation claim's baseline)."""
  del sigma
  return windows(x, window, stride, padding)[:, :, :, 0]
