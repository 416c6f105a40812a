"""Name-to-part tables: the one place where config strings become callables.

Configs name activations and pools; models take callables. Keeping the
mapping here means a new entry is one line, and every consumer (model, sweep,
report, tests) sees the same set of names.
"""

import functools
from typing import Callable, NamedTuple

import flax.linen as nn

from cnn_jax import layers
from cnn_jax import pooling

ACTIVATIONS: dict[str, Callable] = {
    # The seed's three.
    'sigmoid': nn.sigmoid,
    'tanh': nn.tanh,
    'relu': nn.relu,
    # Later variants, with PyTorch's defaults.
    'leaky_relu': functools.partial(nn.leaky_relu, negative_slope=0.01),
    'elu': nn.elu,
    'gelu': functools.partial(nn.gelu, approximate=False),
    'silu': nn.silu,
}

# The seed's four; each is (x, window, stride, padding, sigma) -> x.
POOLS: dict[str, Callable] = {
    'max': pooling.max_pool,
    'avg': pooling.avg_pool,
    'l2': pooling.l2_pool,
    'gaussian': pooling.gaussian_pool,
    # Pools nothing; at window 1, stride 1 with model.conv_stride 2, the
    # strided-conv baseline of the translation claim.
    'subsample': pooling.subsample,
}



class LayerSet(NamedTuple):
  """A conv and a BatchNorm, built as conv(features, kernel_size, stride=...,
  kernel_init=..., name=...) and batch_norm(use_running_average=...,
  momentum=..., epsilon=..., axis_name=..., name=...)."""
  conv: Callable[..., nn.Module]
  batch_norm: Callable[..., nn.Module]


def _flax_conv(features: int, kernel_size: int, stride: int = 1,
               **kwargs) -> nn.Module:
  return nn.Conv(features, (kernel_size, kernel_size), strides=stride,
                 padding='SAME', **kwargs)


# Both sets make the same parameter and batch_stats trees, so a checkpoint
# moves between them; `models.create_model` picks one per backend.
LAYERS: dict[str, LayerSet] = {
    'flax': LayerSet(_flax_conv, nn.BatchNorm),
    # Faster on XLA's CPU backend (cnn_jax/layers.py, docs/performance.md).
    'cpu': LayerSet(layers.Conv, layers.BatchNorm),
}

_TABLES = {'activation': ACTIVATIONS, 'pooling': POOLS, 'layers': LAYERS}


def names(kind: str) -> list[str]:
  """The names registered for `kind` ('activation', 'pooling', 'layers')."""
  return sorted(_TABLES[kind])


def lookup(kind: str, name: str) -> Callable:
  """Returns the part called `name`; the error lists the valid names."""
  table = _TABLES[kind]
  if name not in table:
    raise KeyError(f'unknown {kind} {name!r}; allowed: {", ".join(names(kind))}')
  return table[name]
