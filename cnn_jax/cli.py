"""What every command line here shares: --config, --workdir, one-line errors.

Bad input is not a crash: it gets one `error:` line naming the field, exit
status 2 and no traceback.
"""

import sys
from typing import NoReturn

from absl import flags
from absl import logging
from ml_collections import config_flags

FLAGS = flags.FLAGS


def define_flags(*, config: bool = True) -> None:
  """Defines --workdir and (optionally) --config.

  Called by each entry point under `__main__`, so that importing its module
  as a library (tests, notebooks) defines no flags.
  """
  flags.DEFINE_string('workdir', None, 'The run or sweep folder.')
  flags.mark_flag_as_required('workdir')
  if config:
    config_flags.DEFINE_config_file(
        'config', None, 'Path to a config file (get_config()).',
        lock_config=True)
    flags.mark_flag_as_required('config')


def fail(message: str) -> NoReturn:
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
    fail(str(e).splitlines()[0])
  except (AttributeError, KeyError) as e:
    # ml_collections raises these for an override of a field that does not
    # exist; the locked config refuses new fields.
    key = str(e).strip('"\'')
    fail(f'unknown config field {_unknown_field(argv, key)}; the config '
         f'file lists the fields that exist')


def _only_own_info(record) -> bool:
  """Keeps the console to our progress lines: libraries' INFO chatter goes."""
  return record.levelno >= 30 or '/cnn_jax/' in record.pathname


def quiet_library_logs() -> None:
  logging.get_absl_handler().addFilter(_only_own_info)
