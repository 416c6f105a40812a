"""Helpers shared by the tests: the tiny config every test derives from."""

import contextlib
import fcntl
import os
import pty
import resource
import signal
import struct
import subprocess
import sys
import termios
import threading
import time

from configs import default

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The four original .gz files for offline preparation: what `make test` passes,
# else the copy in ../shared beside the repository; empty lets TFDS download.
_SHARED = os.path.join(ROOT, '..', 'shared', 'data', 'fashion_mnist')
MANUAL_DIR = os.environ.get('CNN_JAX_MANUAL_DIR') or (
    os.path.abspath(_SHARED) if os.path.isdir(_SHARED) else '')


def xla_flags(devices: int) -> str:
  """`devices` CPU devices, compiled without LLVM's expensive passes.

  The tests' programs are small and run a few steps, so compile time is
  most of their cost. (`--xla_backend_optimization_level=0` compiled faster
  still but changed a BatchNorm bias by 0.03 after 3 steps, jax 0.10.2: not
  used.)
  """
  return (f'--xla_force_host_platform_device_count={devices} '
          '--xla_llvm_disable_expensive_passes=true')


def subprocess_env(devices: int) -> dict[str, str]:
  """This process's environment for a command run as a user runs it."""
  return dict(os.environ, XLA_FLAGS=xla_flags(devices))


def tiny_config():
  """The default config shrunk to seconds: one epoch on a few examples."""
  config = default.get_config()
  config.num_epochs = 1
  config.batch_size = 8
  config.eval_batch_size = 8
  config.data.num_validation_examples = 8
  config.data.num_train_examples = 32
  # Mock data must neither read nor write the cache of real data.
  config.data.cache = False
  return config


# Runs the commands that run_commands is given, one after another, in this
# one process: each as `python -m` runs it (its folder first on sys.path, the
# module as __main__, absl's flags parsed afresh), with its own stdout and
# stderr (file descriptors, so native output too) and exit status.
_COMMANDS = r'''
import json, os, runpy, sys, tempfile, traceback
from absl import app, flags
app.define_help_flags()  # What absl adds at its first run: kept throughout.
commands, results_path = json.load(open(sys.argv[1])), sys.argv[2]
base_path, base_env = list(sys.path), dict(os.environ)
results = []
for command in commands:
  os.chdir(command['cwd'])
  os.environ.clear()
  os.environ.update(base_env, **command['env'])
  sys.path[:] = [command['cwd'], *base_path[1:]]
  sys.argv = [command['module'], *command['args']]
  defined = set(flags.FLAGS)
  files = [tempfile.TemporaryFile(), tempfile.TemporaryFile()]
  saved = [os.dup(1), os.dup(2)]
  for fd, f in zip((1, 2), files):
    os.dup2(f.fileno(), fd)
  try:
    runpy.run_module(command['module'], run_name='__main__', alter_sys=True)
    code = 0
  except SystemExit as e:  # What the interpreter makes of it at its exit.
    code = e.code
    if code is None:
      code = 0
    elif not isinstance(code, int):
      print(code, file=sys.stderr)
      code = 1
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()
    code = 1
  sys.stdout.flush()
  sys.stderr.flush()
  for fd, old in zip((1, 2), saved):
    os.dup2(old, fd)
    os.close(old)
  # The next command defines its own flags, and reads its own config files.
  for name in set(flags.FLAGS) - defined:
    delattr(flags.FLAGS, name)
  flags.FLAGS.unparse_flags()
  for name in [m for m in sys.modules if m.split('.')[0] == 'configs']:
    del sys.modules[name]
  outputs = []
  for f in files:
    f.seek(0)
    outputs.append(f.read().decode(errors='replace'))
  results.append([code, *outputs])
with open(results_path, 'w') as f:
  json.dump(results, f)
'''


def run_commands(commands, devices=2, timeout=600):
  """Runs `python -m MODULE ARGS...` for each (module, args, cwd, env) in
  `commands`, all in one new process, one after another; returns
  [(exit status, stdout, stderr)] in the same order.

  For commands that stop at bad input: each pays for its own check, not for
  a Python process and JAX's import. `env` is added to the environment.
  """
  import json  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as folder:
    listing = os.path.join(folder, 'commands.json')
    results = os.path.join(folder, 'results.json')
    with open(listing, 'w') as f:
      json.dump([{'module': module, 'args': [str(a) for a in args],
                  'cwd': str(cwd), 'env': env or {}}
                 for module, args, cwd, env in commands], f)
    proc = subprocess.run([sys.executable, '-c', _COMMANDS, listing, results],
                          cwd=folder, env=subprocess_env(devices),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(results) as f:
      return [tuple(r) for r in json.load(f)]


def hold_folder(folder):
  """Starts a process that claims `folder` and sleeps; returns once it does."""
  code = ('import sys, time\n'
          'from cnn_jax import records\n'
          'records.claim_folder(sys.argv[1])\n'
          'print("claimed", flush=True)\n'
          'time.sleep(120)\n')
  proc = subprocess.Popen([sys.executable, '-c', code, str(folder)],
                          cwd=ROOT, stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == 'claimed'
  return proc


def kill_when(cmd, moment, timeout=300):
  """Runs `cmd` and SIGKILLs it as soon as `moment(seconds)` is true.

  Returns whether it was killed (False: it finished first, successfully).
  """
  proc = subprocess.Popen(cmd, cwd=ROOT, env=subprocess_env(1),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  start = time.time()
  while proc.poll() is None:
    assert time.time() - start < timeout
    if moment(time.time() - start):
      proc.send_signal(signal.SIGKILL)
      proc.wait()
      return True
    # Polled every few milliseconds, not in a busy loop that would take a
    # core from the run: a checkpoint's temporary folder lasts about 100 ms.
    time.sleep(0.005)
  assert proc.returncode == 0
  return False


def on_a_terminal(fn):
  """Calls fn() with sys.stderr a terminal (a pseudo-terminal); returns
  what reached the terminal."""
  reader_end, terminal_end = pty.openpty()
  # 24 rows of 100 columns; a new pseudo-terminal has none, and tqdm fits
  # its bar to the width.
  fcntl.ioctl(terminal_end, termios.TIOCSWINSZ,
              struct.pack('HHHH', 24, 100, 0, 0))
  chunks = []

  def drain():  # A full terminal buffer would block the writer.
    while True:
      try:
        chunk = os.read(reader_end, 1 << 16)
      except OSError:  # The terminal end closed.
        return
      if not chunk:
        return
      chunks.append(chunk)

  reader = threading.Thread(target=drain)
  reader.start()
  with open(terminal_end, 'w') as tty, contextlib.redirect_stderr(tty):
    fn()
  reader.join(timeout=30)
  os.close(reader_end)
  return b''.join(chunks).decode(errors='replace')


def tensorboard_events(workdir):
  """TensorBoard's Python reader (plugin_event_accumulator, what `tensorboard
  --load_fast=false` serves) over a run folder, every event kept. Its purge
  of an interrupted invocation's events needs a SessionLog START in every
  invocation: the run's first only marks its start."""
  # Imported here: only the tests that read events need TensorBoard.
  from tensorboard.backend.event_processing import plugin_event_accumulator
  events = plugin_event_accumulator.EventAccumulator(
      str(workdir), size_guidance={plugin_event_accumulator.TENSORS: 0})
  events.Reload()
  return events


def tensorboard_scalars(workdir, tag):
  """[(step, value)] of a scalar tag, as TensorBoard shows it."""
  from tensorboard.util import tensor_util
  return [(e.step, tensor_util.make_ndarray(e.tensor_proto).item())
          for e in tensorboard_events(workdir).Tensors(tag)]


@contextlib.contextmanager
def lowered_programs():
  """The names of the programs JAX lowers inside the block (e.g.
  'jit(_init_variables)'), whether XLA then compiles them or the persistent
  compilation cache, on in the tests, has them: a program lowered twice was
  compiled twice, or loaded twice."""
  import jax  # pylint: disable=g-import-not-at-top
  names = []

  def listen(event, duration_secs, *, fun_name='', **kwargs):
    del duration_secs, kwargs
    if event == '/jax/core/compile/jaxpr_to_mlir_module_duration':
      names.append(fun_name)

  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    yield names
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)


@contextlib.contextmanager
def writes_limited_to(size):
  """The kernel refuses this process's writes past `size` bytes of a file
  (EFBIG), as a full disk refuses any (ENOSPC): a real failure, in orbax's
  writer threads too, without root or a small filesystem."""
  handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # Else it kills.
  limit = resource.getrlimit(resource.RLIMIT_FSIZE)
  resource.setrlimit(resource.RLIMIT_FSIZE, (size, limit[1]))
  try:
    yield
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, limit)
    signal.signal(signal.SIGXFSZ, handler)
