"""Entry point: `python -m cnn_jax.main --config=configs/default.py --workdir=DIR`.

Kept short on purpose: flags in, `train.train_and_evaluate` does the work.
"""

import os

# Before TensorFlow (imported by TFDS) loads: keep its C++ INFO lines quiet.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app
from absl import logging
import jax

from cnn_jax import cli
from cnn_jax import train
from cnn_jax import validation


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])}')
  cli.quiet_library_logs()
  logging.info('JAX devices: %s', jax.local_devices())
  try:
    train.train_and_evaluate(cli.FLAGS.config, cli.FLAGS.workdir)
  except validation.ConfigError as e:
    cli.fail(str(e))


if __name__ == '__main__':
  cli.define_flags()
  app.run(main, flags_parser=cli.parse_flags)
