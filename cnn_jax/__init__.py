"""cnn_jax: the seed's ConvNet on Fashion-MNIST, in JAX/Flax.

Importing the package sets the process environment every entry point shares,
before JAX or TensorFlow start a backend:

- TensorFlow's C++ INFO lines are kept off the console (TFDS imports it).
- XLA CPU's YNNPACK convolution and reduction fusions, on by default since
  jax 0.10, are turned off: the seed's train step ran faster without them on
  a 2-core x86-64 CPU (README, Speed). GPUs and TPUs ignore the option.

A user's own setting of either, in the environment, wins.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

_YNN_OPTION = 'xla_cpu_experimental_ynn_fusion_type'
if _YNN_OPTION not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (
      os.environ.get('XLA_FLAGS', '') + f' --{_YNN_OPTION}=').strip()
