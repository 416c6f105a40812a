"""Conv and BatchNorm: Flax's layers, written to run faster on XLA's CPU backend.

Each has the same parameters, variables, initializers and numbers as
`flax.linen.Conv(features, (k, k), padding='SAME')` or `flax.linen.BatchNorm`
(tests/layers_test.py checks them to float tolerance), so checkpoints and
results carry over.

- Conv: a one-channel input (conv1) is 25 shifted copies of the image times
  a [25, features] matrix, which XLA's CPU backend runs faster than its own
  one-channel convolution; the gradients stay XLA's convolution gradients.
- BatchNorm: Flax's formulas (fast variance, running averages, statistics
  averaged over `axis_name`), written directly, which XLA fused better.

docs/performance.md gives the measurements behind both.
"""

from typing import Callable

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

_DIMENSIONS = ('NHWC', 'HWIO', 'NHWC')


def _xla_conv(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
  pad = kernel.shape[0] // 2
  return lax.conv_general_dilated(x, kernel, (1, 1), ((pad, pad), (pad, pad)),
                                  dimension_numbers=_DIMENSIONS)


@jax.custom_vjp
def _one_channel_conv(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
  """'Same' convolution of [N, H, W, 1]: shifted copies times kernel rows."""
  kh, kw = kernel.shape[:2]
  _, height, width, _ = x.shape
  padded = jnp.pad(x[..., 0], ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2)))
  # [kh * kw, N, H, W]: each copy is one contiguous block.
  shifted = jnp.stack([padded[:, i:i + height, j:j + width]
                       for i in range(kh) for j in range(kw)])
  return jnp.einsum('knhw,kf->nhwf', shifted, kernel.reshape(kh * kw, -1))


def _one_channel_conv_fwd(x, kernel):
  return _one_channel_conv(x, kernel), (x, kernel)


def _one_channel_conv_bwd(residuals, grad):
  # XLA's own kernel gradient: faster than autodiff of the product above,
  # which contracts the 25 copies with the gradient.
  _, vjp = jax.vjp(_xla_conv, *residuals)
  return vjp(grad)


_one_channel_conv.defvjp(_one_channel_conv_fwd, _one_channel_conv_bwd)


class Conv(nn.Module):
  """`nn.Conv(features, (k, k), strides=stride, padding='SAME')` for odd k.

  The one-channel product serves stride 1; strided convs (a baseline, not
  the seed's model) are XLA's own.
  """
  features: int
  kernel_size: int
  stride: int = 1
  kernel_init: Callable[..., jnp.ndarray] = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    k = self.kernel_size
    kernel = self.param('kernel', self.kernel_init,
                        (k, k, x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,))
    if self.stride != 1:
      out = lax.conv_general_dilated(x, kernel, (self.stride, self.stride),
                                     'SAME', dimension_numbers=_DIMENSIONS)
      return out + bias
    conv = _one_channel_conv if x.shape[-1] == 1 else _xla_conv
    return conv(x, kernel) + bias


class BatchNorm(nn.Module):
  """`nn.BatchNorm` over the last axis, for float32 inputs.

  Attributes:
    use_running_average: normalize with the running statistics (evaluation)
      rather than the batch's (training, which also updates them).
    momentum: decay of the running statistics.
    epsilon: added to the variance.
    axis_name: the mapped axis the batch statistics are averaged over.
  """
  use_running_average: bool
  momentum: float = 0.99
  epsilon: float = 1e-5
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    features = x.shape[-1]
    ra_mean = self.variable('batch_stats', 'mean',
                            lambda: jnp.zeros((features,), jnp.float32))
    ra_var = self.variable('batch_stats', 'var',
                           lambda: jnp.ones((features,), jnp.float32))
    scale = self.param('scale', nn.initializers.ones_init(), (features,))
    bias = self.param('bias', nn.initializers.zeros_init(), (features,))
    if self.use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      axes = tuple(range(x.ndim - 1))
      mean, mean2 = x.mean(axes), (x * x).mean(axes)
      if self.axis_name is not None and not self.is_initializing():
        mean, mean2 = lax.pmean((mean, mean2), self.axis_name)
      var = jnp.maximum(0.0, mean2 - mean * mean)
      if not self.is_initializing():
        m = self.momentum
        ra_mean.value = m * ra_mean.value + (1 - m) * mean
        ra_var.value = m * ra_var.value + (1 - m) * var
    return (x - mean) * (lax.rsqrt(var + self.epsilon) * scale) + bias
