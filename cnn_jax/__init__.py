"""cnn_jax: the seed's ConvNet on Fashion-MNIST, in JAX/Flax.

Importing the package sets the process environment every entry point shares,
before JAX or TensorFlow start a backend:

- TensorFlow's C++ INFO lines are kept off the console (TFDS imports it).
- XLA CPU's YNNPACK convolution and reduction fusions, on by default since
  jax 0.10, are turned off: the seed's train step runs faster without them
  on a CPU (docs/performance.md). GPUs and TPUs ignore the option.
- A GPU's memory is claimed as needed (XLA_PYTHON_CLIENT_PREALLOCATE=false),
  not 75% of it at the first operation, JAX's default: about 105 GiB on an
  H200, which cost each process 1.0-1.3 s there (README, Speed), for a
  model whose training data are 43 MB.
- Run as a command (`python -m cnn_jax.X`), Ctrl-C while its modules load
  ends it with one line, status 130, as `cli.run` does once they have.

A user's own setting of any of them, in the environment, wins.
"""

import os
import signal
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

_YNN_OPTION = 'xla_cpu_experimental_ynn_fusion_type'
if _YNN_OPTION not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (
      os.environ.get('XLA_FLAGS', '') + f' --{_YNN_OPTION}=').strip()


def _interrupted_while_loading(signum, frame) -> None:
  del signum, frame  # Nothing has run yet: nothing to finish or resume.
  print('interrupted', file=sys.stderr, flush=True)
  os._exit(130)  # pylint: disable=protected-access


_ARGV = getattr(sys, 'orig_argv', [])
if ('-m' in _ARGV and _ARGV.index('-m') + 1 < len(_ARGV)
    and _ARGV[_ARGV.index('-m') + 1].startswith(__name__ + '.')
    and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
  signal.signal(signal.SIGINT, _interrupted_while_loading)
