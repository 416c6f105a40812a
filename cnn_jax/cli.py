"""What every command line here shares: --config, --workdir, one-line errors,
and the flags that join a process to a multi-host run.

Bad input is not a crash: it gets one `error:` line naming the field, exit
status 2 and no traceback.
"""

import concurrent.futures.thread
import importlib.util
import os
import signal
import sys
import threading
import types
from typing import Any, Callable, NoReturn

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags

import cnn_jax
from cnn_jax import errors
from cnn_jax import parallel

FLAGS = flags.FLAGS
# The checkout this package runs from: its configs/ serve config files that
# `from configs import default` from anywhere.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(cnn_jax.__file__)))


def define_flags(*, config: bool = True, distributed: bool = True,
                 workdir_required: bool = True) -> None:
  """Defines --workdir and (optionally) --config and the multi-process flags.

  Called by each entry point under `__main__`, so that importing its module
  as a library (tests, notebooks) defines no flags. With --config, --workdir
  may be left out: `workdir()` derives it from the config's name.
  """
  flags.DEFINE_string(
      'workdir', None if workdir_required else '',
      'The run or sweep folder.' + (
          ' Default: workdirs/<config file name>.' if config else ''))
  if workdir_required and not config:
    flags.mark_flag_as_required('workdir')
  if config:
    config_flags.DEFINE_config_file(
        'config', None, 'Path to a config file (get_config()).',
        lock_config=True)
    flags.mark_flag_as_required('config')
    flags.DEFINE_string(
        'compilation_cache',
        os.path.join(os.environ.get('XDG_CACHE_HOME', '~/.cache'), 'cnn_jax',
                     'jax'),
        "Folder of JAX's persistent compilation cache: a rerun, or the next "
        'sweep point with the same shapes, loads its programs instead of '
        "compiling them; '' turns it off. JAX_COMPILATION_CACHE_DIR, when "
        'set, wins.')
    flags.DEFINE_bool('start_over', False,
                      'Discard the run in --workdir (checkpoints, metrics, '
                      'summary) and train it from scratch; in a sweep, the '
                      'points whose config changed. Needed to rerun a '
                      'folder with another config.')
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
  flags.DEFINE_integer(
      'initialization_timeout', 300,
      'Seconds a process of a multi-process run waits for all the others '
      "to join (JAX's default); then it stops with one error line.",
      lower_bound=1)


def start() -> None:
  """What each entry point does first: join the processes, turn on the
  compilation cache, quiet the logs.

  Only process 0 logs progress; the others log warnings and errors.
  """
  logging.get_absl_handler().addFilter(_only_own_info)
  explicit = tuple(FLAGS[name].value if name in FLAGS else None
                   for name in ('coordinator_address', 'num_processes',
                                'process_id'))
  if any(x is not None for x in explicit):
    if any(x is None for x in explicit):
      fail('--coordinator_address, --num_processes and --process_id go '
           'together')
    _join(*explicit)
  elif 'distributed' in FLAGS and FLAGS.distributed:
    _join()
  cache = FLAGS.compilation_cache if 'compilation_cache' in FLAGS else ''
  if cache and not os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    jax.config.update('jax_compilation_cache_dir', os.path.expanduser(cache))
    # Every program, however quick to compile: a sweep point has several.
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  if not parallel.is_main_process():
    logging.set_verbosity(logging.WARNING)


def _join(*layout) -> None:
  """Joins the other processes, or ends this one with one line.

  The wait is in native code, where Python's Ctrl-C handler cannot run
  until it ends: during it, Ctrl-C ends the process at once, as by default
  (nothing has been written yet).
  """
  handler = signal.signal(signal.SIGINT, signal.SIG_DFL)
  try:
    parallel.initialize_distributed(
        *layout, timeout_s=FLAGS.initialization_timeout, on_timeout=_exit_now)
  except errors.UserError as e:
    fail(str(e))
  finally:
    signal.signal(signal.SIGINT, handler)


def _exit_now(message: str) -> NoReturn:
  """fail(), from any thread: for a wait in native code that neither an
  exception nor a signal handler can end."""
  print(f'error: {" ".join(message.split())}', file=sys.stderr, flush=True)
  sys.stdout.flush()
  os._exit(2)  # pylint: disable=protected-access


def workdir() -> str:
  """--workdir, or else `workdirs/<config file name>`, `~` expanded.

  So that a config's command runs as written, without a folder to invent;
  the folder is logged, and a rerun of the same command resumes it.
  """
  if FLAGS.workdir:
    return os.path.expanduser(FLAGS.workdir)
  name = os.path.splitext(os.path.basename(config_file()))[0]
  folder = os.path.join('workdirs', name)
  if parallel.is_main_process():
    logging.info('workdir: %s (from the config file\'s name; --workdir '
                 'chooses another)', folder)
  return folder


def run(main: Callable[[list[str]], Any],
        how_to_resume: str | Callable[[], str] | None = None) -> NoReturn:
  """absl's `app.run(main)` with this parser; Ctrl-C is one line, status 130.

  Args:
    main: the entry point's main(argv).
    how_to_resume: for a command whose work is saved as it goes, what to do
      to go on (or a function that says so, once the flags are parsed): it
      follows the word 'interrupted'.
  """
  # Python's handler again, after the package's for its imports; a process
  # started with Ctrl-C ignored (a shell's background job) keeps ignoring it.
  if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
  sys.unraisablehook = _resend_dropped_interrupts(sys.unraisablehook)
  try:
    app.run(main, flags_parser=parse_flags)
  except KeyboardInterrupt:
    _finish_work_in_flight()
    if callable(how_to_resume):
      how_to_resume = how_to_resume()
    print('interrupted' + (f'; {how_to_resume}' if how_to_resume else ''),
          file=sys.stderr, flush=True)
    sys.exit(130)  # 128 + SIGINT, as a shell reports a process it ended.


def _resend_dropped_interrupts(hook: Callable[[Any], Any]
                               ) -> Callable[[Any], None]:
  """`hook` (a sys.unraisablehook), but for a KeyboardInterrupt: one that
  Ctrl-C raised where Python cannot raise it (a garbage-collector callback
  or a finalizer, where JAX and TensorFlow have code) was printed and
  dropped, and the command went on. The signal comes again instead.
  """
  def unraisable(info: Any) -> None:
    if issubclass(info.exc_type, KeyboardInterrupt):
      again = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT))
      again.daemon = True
      again.start()
    else:
      hook(info)
  return unraisable


def _finish_work_in_flight() -> None:
  """Waits for the threads that end by themselves, such as orbax's commit
  of a checkpoint being written.

  The interpreter's shutdown first stops the thread pools, and a commit
  that then hands a pool its next task fails with a traceback (the
  checkpoint is lost). The pools' idle workers are not waited for: they
  end only at that shutdown. A second Ctrl-C stops waiting.
  """
  # Python's own record of the pools' workers (3.2 and later); without it,
  # nothing is waited for.
  workers = getattr(concurrent.futures.thread, '_threads_queues', None)
  if workers is None:
    return
  try:
    for thread in threading.enumerate():
      if (thread is not threading.current_thread() and not thread.daemon
          and thread not in workers):
        thread.join()
  except KeyboardInterrupt:
    pass


def fail(message: str, status: int = 2) -> NoReturn:
  """One `error:` line and exit `status`: the user's mistake, no traceback."""
  print(f'error: {" ".join(message.split())}', file=sys.stderr)
  sys.exit(status)


def _config_path(argv: list[str]) -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      return arg.split('=', 1)[1]
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _make_configs_importable(path: str) -> None:
  """Lets a config file `from configs import default` from any directory.

  The folder above the file's own `configs/` comes first; this checkout's
  is the fallback, for a copy of a config saved elsewhere.
  """
  folder = os.path.dirname(os.path.abspath(path))
  while os.path.dirname(folder) != folder:
    if os.path.basename(folder) == 'configs':
      sys.path.insert(0, os.path.dirname(folder))
      break
    folder = os.path.dirname(folder)
  if os.path.isdir(os.path.join(_REPO, 'configs')):
    sys.path.append(_REPO)


def _root_cause(e: BaseException) -> BaseException:
  while e.__cause__ is not None:
    e = e.__cause__
  return e


def config_file() -> str:
  """The --config file's path, `~` expanded."""
  return os.path.expanduser(config_flags.get_config_filename(FLAGS['config']))


def load_config_module(path: str) -> types.ModuleType:
  """Imports a config file; raises UserError naming it if it cannot be run."""
  if not os.path.isfile(path):
    raise errors.UserError(f'--config: no config file at {path}')
  spec = importlib.util.spec_from_file_location('config_file', path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except
    # Whatever a config file raises is a mistake in the file.
    raise errors.UserError(f'--config: {path} failed to load: '
                           f'{type(e).__name__}: {e}') from None
  if not hasattr(module, 'get_config'):
    raise errors.UserError(f'--config: {path} has no get_config()')
  return module


def _unknown_field(argv: list[str], key: str) -> str:
  """The `--config.a.b` override whose path holds the unknown `key`."""
  for arg in argv:
    if arg.startswith('--config.'):
      path = arg[2:].split('=', 1)[0]
      if key in path.split('.'):
        return path
  return f'config.{key}'


def load_config(value: str) -> ml_collections.ConfigDict:
  """What --config=FILE[:ARG] names: FILE's get_config(ARG), or get_config().

  Raises UserError naming the file if it cannot be imported, or if its
  get_config() raises or returns something other than a ConfigDict.
  """
  path, *arg = value.split(':', 1)  # Split as ml_collections splits it.
  path = os.path.expanduser(path)
  module = load_config_module(path)
  try:
    config = module.get_config(*arg)
  except Exception as e:  # pylint: disable=broad-except
    # Whatever get_config raises is a mistake in the file or the ARG.
    raise errors.UserError(f'--config: {path}: get_config() raised '
                           f'{type(e).__name__}: {e}') from None
  if not isinstance(config, ml_collections.ConfigDict):
    got = 'None' if config is None else type(config).__name__
    raise errors.UserError(f'--config: {path}: get_config() returned '
                           f'{got}; it must return a '
                           f'ml_collections.ConfigDict')
  return config


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with flag and config errors reduced to one line.

  The config is built once here first, so that a missing file, or one that
  raises, is named on one line rather than in absl's traceback (or, for
  some exceptions, in ml_collections' deferred one).
  """
  value = _config_path(argv)
  if value is not None:
    _make_configs_importable(os.path.expanduser(value.split(':', 1)[0]))
    try:
      load_config(value)
    except errors.UserError as e:
      fail(str(e))
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
