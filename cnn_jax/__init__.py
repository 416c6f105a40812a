"""cnn_jax: the seed's ConvNet on Fashion-MNIST, in JAX/Flax.

Importing the package turns off one XLA CPU feature before JAX starts a
backend: YNNPACK's convolution and reduction fusions, on by default in jax
0.10. Without them the seed's train step ran about 1.2x faster on a 2-core
x86-64 CPU (about 3,380 -> 4,100 images/s at batch 128; a development
measurement, see the README's Speed section). A user's own setting of the
option in XLA_FLAGS wins; GPUs and TPUs ignore it.
"""

import os

_YNN_OPTION = 'xla_cpu_experimental_ynn_fusion_type'

if _YNN_OPTION not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (
      os.environ.get('XLA_FLAGS', '') + f' --{_YNN_OPTION}=').strip()
