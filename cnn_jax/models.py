"""The seed's ConvNet: [conv -> BatchNorm -> act -> pool] x 2 -> dense."""

import functools
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from cnn_jax import layers
from cnn_jax import pooling
from cnn_jax import registry

# The kernels model.kernel_init_scale multiplies, by model.kernel_init_layers;
# the others keep the default. BatchNorm follows each conv but not the dense
# layer, so scaling one or the other tells which of them BatchNorm protects.
KERNEL_INIT_LAYERS = {'all': ('conv', 'dense'), 'conv': ('conv',),
                      'dense': ('dense',)}


class CNN(nn.Module):
  """Conv stages with an optional BatchNorm, then one fully connected layer.

  Attributes:
    features: filters per conv stage; the seed uses (16, 32).
    kernel_size: square kernel side; padding keeps the spatial size ("same").
    num_classes: outputs of the final dense layer.
    act: elementwise nonlinearity after each conv (and BatchNorm).
    pool: NHWC -> NHWC downsampling after each activation.
    batch_norm: whether each conv is followed by BatchNorm. The convs keep
      their bias either way, as in the seed's PyTorch model (29,034 params).
    bn_axis_name: the mapped axis BatchNorm averages its statistics over, so
      they are those of the global batch under pmap; None outside a pmap.
    conv_stride: the convs' stride; 2, with 'subsample' in one-pixel windows
      as the pool, is the downsampling-without-pooling baseline.
    conv_kernel_init: initializer of the conv kernels.
    dense_kernel_init: initializer of the dense (output) kernel.
    conv: builds a 'same' conv layer (registry.LayerSet).
    norm: builds a BatchNorm layer (registry.LayerSet).
  """
  features: Sequence[int] = (16, 32)
  kernel_size: int = 5
  num_classes: int = 10
  act: Callable[[jnp.ndarray], jnp.ndarray] = nn.relu
  pool: Callable[[jnp.ndarray], jnp.ndarray] = pooling.max_pool
  batch_norm: bool = True
  bn_axis_name: str | None = 'batch'
  conv_stride: int = 1
  conv_kernel_init: Callable[..., jnp.ndarray] = (
      nn.initializers.lecun_normal())
  dense_kernel_init: Callable[..., jnp.ndarray] = (
      nn.initializers.lecun_normal())
  conv: Callable[..., nn.Module] = layers.Conv
  norm: Callable[..., nn.Module] = layers.BatchNorm

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    for i, features in enumerate(self.features):
      x = self.conv(features, self.kernel_size, stride=self.conv_stride,
                    kernel_init=self.conv_kernel_init,
                    name=f'conv{i + 1}')(x)
      if self.batch_norm:
        # PyTorch BatchNorm2d defaults: running-average momentum 0.1, eps 1e-5.
        x = self.norm(use_running_average=not train, momentum=0.9,
                      epsilon=1e-5, axis_name=self.bn_axis_name,
                      name=f'bn{i + 1}')(x)
      x = self.act(x)
      # The activation maps, for plots (evaluate.py); kept only when the
      # 'intermediates' collection is mutable, so training pays nothing.
      self.sow('intermediates', f'act{i + 1}', x)
      x = self.pool(x)
    x = x.reshape((x.shape[0], -1))
    # The penultimate features, for the translation probe
    # (experiments/claims/invariance.py).
    self.sow('intermediates', 'features', x)
    return nn.Dense(self.num_classes, kernel_init=self.dense_kernel_init,
                    name='fc')(x)


# Used for testing only: one small stage keeps compilation quick.
_TinyCNN = functools.partial(CNN, features=(4,), kernel_size=3)


def feature_map_sides(model_config: ml_collections.ConfigDict,
                      side: int) -> list[int]:
  """The side of each stage's pooled feature map, from an input of `side`.

  A conv keeps the size ("same" padding) at stride 1 and gives
  ceil(W / S) at stride S; each pool applies the seed's formula
  floor((W - F + 2P) / S) + 1. A side below 1 means the pool's window no
  longer fits: the caller refuses such a config.
  """
  sides = []
  for _ in model_config.features:
    side = -(-side // model_config.conv_stride)
    side = pooling.output_size(side, model_config.pool_window,
                               model_config.pool_stride,
                               model_config.pool_padding)
    sides.append(side)
    if side < 1:
      break
  return sides


class LayerGeometry(NamedTuple):
  """One layer's window, its output and the input pixels one output sees."""
  name: str
  window: int
  stride: int
  side: int
  channels: int
  receptive_field: int
  jump: int


def receptive_fields(model_config: ml_collections.ConfigDict,
                     side: int = 28) -> list[LayerGeometry]:
  """Each layer's output side and receptive field, from the config alone.

  The standard recurrence over layers with window k and stride s: the
  receptive field grows by (k - 1) times the input's jump (the distance, in
  input pixels, between neighbouring units), r_out = r_in + (k - 1) j_in,
  and the jump multiplies by the stride, j_out = j_in s. Convs have stride
  1 and keep the side; pools give the seed's output-size formula
  (`feature_map_sides`). Padding moves the window, not its size.
  """
  layers_out = [LayerGeometry('input', 1, 1, side, 1, 1, 1)]
  pool_sides = feature_map_sides(model_config, side)
  r, j = 1, 1
  for i, (features, pooled) in enumerate(zip(model_config.features,
                                             pool_sides)):
    k, s = model_config.kernel_size, model_config.conv_stride
    r, j = r + (k - 1) * j, j * s
    side = -(-side // s)
    layers_out.append(LayerGeometry(f'conv{i + 1}', k, s, side, features,
                                    r, j))
    k, s, side = model_config.pool_window, model_config.pool_stride, pooled
    r, j = r + (k - 1) * j, j * s
    layers_out.append(LayerGeometry(f'pool{i + 1}', k, s, side, features,
                                    r, j))
  return layers_out


def layer_set_name(name: str) -> str:
  """`model.layers`, with 'auto' resolved: the one place that decides.

  'auto' takes the CPU-tuned layers on the CPU backend and Flax's own
  everywhere else, each the faster there (docs/performance.md).
  """
  if name != 'auto':
    return name
  return 'cpu' if jax.default_backend() == 'cpu' else 'flax'


def create_model(model_config: ml_collections.ConfigDict, **kwargs: Any) -> CNN:
  """Builds the CNN a config describes, resolving part names in the registry."""
  layer_set = registry.lookup('layers', layer_set_name(model_config.layers))
  pool = functools.partial(
      registry.lookup('pooling', model_config.pooling),
      window=model_config.pool_window,
      stride=model_config.pool_stride,
      padding=model_config.pool_padding,
      sigma=model_config.pool_sigma)
  # lecun_normal is variance_scaling(1, 'fan_in', 'truncated_normal'): a
  # scale of s^2 multiplies the initial kernels by s.
  scaled = KERNEL_INIT_LAYERS[model_config.kernel_init_layers]
  kernel_init = {kind: nn.initializers.variance_scaling(
      model_config.kernel_init_scale ** 2 if kind in scaled else 1.0,
      'fan_in', 'truncated_normal') for kind in ('conv', 'dense')}
  return CNN(
      features=tuple(model_config.features),
      kernel_size=model_config.kernel_size,
      conv_stride=model_config.conv_stride,
      conv_kernel_init=kernel_init['conv'],
      dense_kernel_init=kernel_init['dense'],
      num_classes=model_config.num_classes,
      act=registry.lookup('activation', model_config.activation),
      pool=pool,
      batch_norm=model_config.batch_norm,
      conv=layer_set.conv,
      norm=layer_set.batch_norm,
      **kwargs)
