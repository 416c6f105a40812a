"""Entry point: `python -m cnn_jax.main --config=configs/default.py --workdir=DIR`.

Kept short on purpose: flags in, `train.train_and_evaluate` does the work.
"""

import os
import sys

# Before TensorFlow (imported by TFDS) loads: keep its C++ INFO lines quiet.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from cnn_jax import train
from cnn_jax import validation

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Where checkpoints, metrics and summary.json go.')
config_flags.DEFINE_config_file(
    'config', None, 'Path to a config file (get_config()).', lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def _fail(message: str) -> None:
  """One line on stderr and exit status 2: bad input is not a crash."""
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def _unknown_field(argv: list[str], key: str) -> str:
  """The `--config.a.b` override whose path holds the unknown `key`."""
  for arg in argv:
    if arg.startswith('--config.'):
      path = arg[2:].split('=', 1)[0]
      if key in path.split('.'):
        return path
  return f'config.{key}'


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with flag and config errors reduced to one line."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    _fail(str(e).splitlines()[0])
  except (AttributeError, KeyError) as e:
    # ml_collections raises these for an override of a field that does not
    # exist; the locked config refuses new fields.
    key = str(e).strip('"\'')
    _fail(f'unknown config field {_unknown_field(argv, key)}; the config '
          f'file lists the fields that exist')


def _only_own_info(record) -> bool:
  """Keeps the console to our epoch lines: libraries' INFO chatter is dropped."""
  return record.levelno >= 30 or '/cnn_jax/' in record.pathname


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    _fail(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.get_absl_handler().addFilter(_only_own_info)
  logging.info('JAX devices: %s', jax.local_devices())
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except validation.ConfigError as e:
    _fail(str(e))


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
