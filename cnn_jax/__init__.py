"""cnn_jax: the seed's ConvNet on Fashion-MNIST, in JAX/Flax.

Importing the package sets the process environment every entry point shares,
before JAX or TensorFlow start a backend:

- TensorFlow's C++ INFO lines are kept off the console (TFDS imports it).
- XLA CPU's YNNPACK convolution and reduction fusions, on by default since
  jax 0.10, are turned off: the seed's train step ran faster without them on
  a 2-core x86-64 CPU (README, Speed). GPUs and TPUs ignore the option.
- A GPU's memory is claimed as needed (XLA_PYTHON_CLIENT_PREALLOCATE=false),
  not 75% of it at the first operation, JAX's default: about 105 GiB on an
  H200, which cost each process 1.0-1.3 s there (README, Speed), for a
  model whose training data are 43 MB.

A user's own setting of any of them, in the environment, wins.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

_YNN_OPTION = 'xla_cpu_experimental_ynn_fusion_type'
if _YNN_OPTION not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (
      os.environ.get('XLA_FLAGS', '') + f' --{_YNN_OPTION}=').strip()
