"""Name-to-part tables: the one place where config strings become callables.

Configs name activations and pools; models take callables. Keeping the
mapping here means a new entry is one line, and every consumer (model, sweep,
report, tests) sees the same set of names.
"""

import functools
from typing import Callable

import flax.linen as nn

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
}

_TABLES = {'activation': ACTIVATIONS, 'pooling': POOLS}


def names(kind: str) -> list[str]:
  """The names registered for `kind` ('activation' or 'pooling')."""
  return sorted(_TABLES[kind])


def lookup(kind: str, name: str) -> Callable:
  """Returns the part called `name`; the error lists the valid names."""
  table = _TABLES[kind]
  if name not in table:
    raise KeyError(f'unknown {kind} {name!r}; allowed: {", ".join(names(kind))}')
  return table[name]
