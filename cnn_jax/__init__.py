"""cnn_jax: the seed's ConvNet on Fashion-MNIST, in JAX/Flax.

Importing the package sets one XLA CPU option before JAX starts a backend:
YNNPACK's convolution and reduction fusions. With them (XLA's CPU default
in jax 0.10) the seed's train step ran about 1.2x slower on a 2-core
x86-64 CPU than with XLA's own kernels (`python -m cnn_jax.benchmark`, see
the README). A user's own setting of the option in XLA_FLAGS wins; GPUs and
TPUs ignore it.
"""

import os

_YNN_OPTION = '--xla_cpu_experimental_ynn_fusion_type'

if 'xla_cpu_experimental_ynn_fusion_type' not in os.environ.get(
    'XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (
      os.environ.get('XLA_FLAGS', '') + f' {_YNN_OPTION}=').strip()
