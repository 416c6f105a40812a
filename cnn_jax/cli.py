"""What every command line here shares: --config, --workdir, one-line errors,
and the flags that join a process to a multi-host run.

Bad input is not a crash: it gets one `error:` line naming the field, exit
status 2 and no traceback.
"""

import sys
from typing import NoReturn

from absl import flags
from absl import logging
from ml_collections import config_flags

from cnn_jax import parallel

FLAGS = flags.FLAGS


def define_flags(*, config: bool = True, distributed: bool = True) -> None:
  """Defines --workdir and (optionally) --config and the multi-process flags.

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
  if not distributed:
    return
  flags.DEFINE_string('coordinator_address', None,
                      'host:port of process 0, for a run over several '
                      'processes (jax.distributed).')
  flags.DEFINE_integer('num_processes', None, 'Processes in the run.')
  flags.DEFINE_integer('process_id', None, 'This process\'s index, 0 first.')
  flags.DEFINE_bool('distributed', False,
                    'Join a multi-process run whose layout JAX reads from '
                    'the environment (Cloud TPU, SLURM, ...). Implied by '
                    'the three flags above.')


def start() -> None:
  """What each entry point does first: join the processes, quiet the logs.

  Only process 0 logs progress; the others log warnings and errors.
  """
  explicit = tuple(FLAGS[name].value if name in FLAGS else None
                   for name in ('coordinator_address', 'num_processes',
                                'process_id'))
  if any(x is not None for x in explicit):
    if any(x is None for x in explicit):
      fail('--coordinator_address, --num_processes and --process_id go '
           'together')
    parallel.initialize_distributed(*explicit)
  elif 'distributed' in FLAGS and FLAGS.distributed:
    parallel.initialize_distributed()
  logging.get_absl_handler().addFilter(_only_own_info)
  if not parallel.is_main_process():
    logging.set_verbosity(logging.WARNING)


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
