"""The command line, run as a user runs it: in a subprocess. The refusals
of bad input, which stop before any work, share one (_util.run_commands)."""

import gc
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from cnn_jax import cli
from cnn_jax import input_pipeline
import _util


@pytest.mark.slow
def test_end_to_end_on_a_real_slice(tmp_path, real_data_dir):
  """The design's own command, without --workdir (the folder comes from the
  config's name), on real images once their decoded splits are cached: it
  then needs no TensorFlow or TFDS, and imports no PyTorch where that is
  installed (as here, for the benchmark): each costs seconds of start-up
  (docs/performance.md)."""
  data = _util.tiny_config().data
  data.update(data_dir=real_data_dir, manual_dir=_util.MANUAL_DIR, cache=True)
  input_pipeline.load_splits(data)  # Prepares and caches, if not yet done.
  # One CPU device, as a user's run here. Two forced host devices on a 2-core
  # machine once stalled an all-reduce past XLA's 40 s rendezvous limit in
  # this multi-minute run while another training ran beside it; the short
  # two-device tests in train_test.py cover the sharded path.
  argv = ['cnn_jax.main', f'--config={_util.ROOT}/configs/default.py',
          '--config.num_epochs=2', '--config.batch_size=50',
          '--config.data.num_train_examples=2000',
          f'--config.data.data_dir={real_data_dir}',
          f'--config.data.manual_dir={_util.MANUAL_DIR}']
  # A module set to None in sys.modules fails to import.
  script = ('import atexit, runpy, sys\n'
            'for name in ("tensorflow", "tensorflow_datasets"):\n'
            '  sys.modules[name] = None\n'
            'atexit.register(lambda: print("torch imported:",\n'
            '                              "torch" in sys.modules))\n'
            f'sys.argv = {argv!r}\n'
            'runpy.run_module("cnn_jax.main", run_name="__main__")\n')
  proc = subprocess.run([sys.executable, '-c', script], cwd=tmp_path,
                        capture_output=True, text=True, timeout=600,
                        env=_util.subprocess_env(1))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'torch imported: False' in proc.stdout, proc.stdout[-2000:]
  workdir = tmp_path / 'workdirs' / 'default'
  assert 'workdir: workdirs/default' in proc.stderr.splitlines()[0]
  with open(workdir / 'summary.json') as f:
    summary = json.load(f)
  assert summary['epochs_completed'] == 2
  assert summary['num_train_examples'] == 2000
  assert summary['data']['source'] == 'cache'
  # 80 steps on 2,000 real images: far above the 0.1 of guessing.
  assert summary['test_accuracy'] > 0.6, summary['test_accuracy']
  with open(workdir / 'metrics.jsonl') as f:
    assert len(f.readlines()) == 2
  # One console line per epoch, with its numbers.
  epoch_lines = [l for l in proc.stderr.splitlines() if 'epoch 2/2' in l]
  assert len(epoch_lines) == 1
  for word in ('train_loss', 'train_acc', 'val_acc', 'img/s', 'ETA'):
    assert word in epoch_lines[0]
  # Library chatter (orbax's INFO lines) stays off the console.
  assert 'orbax' not in proc.stderr


@pytest.mark.parametrize('preallocate', [None, 'true'])
def test_gpu_memory_is_claimed_as_needed_unless_the_user_says(tmp_path,
                                                             preallocate):
  """JAX reads XLA_PYTHON_CLIENT_PREALLOCATE when its client starts: set by
  importing cnn_jax, it must be there before main's first JAX operation,
  which comes after `cli.start`; a user's value wins."""
  argv = ['cnn_jax.main', f'--config={_util.ROOT}/configs/default.py',
          f'--workdir={tmp_path / "run"}']
  script = ('import os, runpy, sys\n'
            'from jax._src import xla_bridge\n'
            'from cnn_jax import cli\n'
            'start = cli.start\n'
            'def start_and_stop():\n'
            '  started = xla_bridge.backends_are_initialized()\n'
            '  start()\n'
            '  print("started before:", started,\n'
            '        os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE"))\n'
            '  sys.exit(0)\n'
            'cli.start = start_and_stop\n'
            f'sys.argv = {argv!r}\n'
            'runpy.run_module("cnn_jax.main", run_name="__main__")\n')
  env = _util.subprocess_env(1)
  env.pop('XLA_PYTHON_CLIENT_PREALLOCATE', None)
  if preallocate:
    env['XLA_PYTHON_CLIENT_PREALLOCATE'] = preallocate
  proc = subprocess.run([sys.executable, '-c', script], cwd=_util.ROOT,
                        capture_output=True, text=True, timeout=300, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.splitlines()[-1] == (
      f'started before: False {preallocate or "false"}'), proc.stdout


SWEEP_COPY = """from configs import default
def get_config():
  config = default.get_config()
  config.num_epochs = 0
  return config
"""

# Each family of mistakes once through the real command line (the checks
# behind them have their own in-process tests): (config file contents or
# path, workdir, args, the words of the one error line).
BAD_INPUTS = {
    'unknown_field': (None, 'run', ['--config.nope=1'],
                      'unknown config field config.nope'),
    'unknown_nested_field': (None, 'run', ['--config.model.depth=3'],
                             'unknown config field config.model.depth'),
    'wrong_type': (None, 'run', ['--config.learning_rate=fast'],
                   'config.learning_rate'),
    'batch_not_divisible': (None, 'run', ['--config.batch_size=101'],
                            'config.batch_size must be a positive multiple '
                            'of the device count (2)'),
    'infinite_learning_rate': (None, 'run', ['--config.learning_rate=inf'],
                               'config.learning_rate must be a finite number '
                               '> 0; got inf'),
    'unknown_dataset': (None, 'run', ['--config.data.dataset=fashon_mnist'],
                        'config.data.dataset must be one of fashion_mnist'),
    'manual_dir_without_files': (None, 'run', ['--config.data.manual_dir=/tmp'],
                                 'config.data.manual_dir must be a folder '
                                 'holding'),
    'missing_config_file': ('/nonexistent/config.py', 'run', [],
                            '--config: no config file at '
                            '/nonexistent/config.py'),
    'config_syntax_error': ('def get_config(:\n', 'run', [],
                            'failed to load: SyntaxError: invalid syntax'),
    'get_config_raises': ('def get_config():\n  raise KeyError("model")\n',
                          'run', [], "--config: my_config.py: get_config() "
                          "raised KeyError: 'model'"),
    'sweep_config_to_main': (f'{_util.ROOT}/configs/sweeps/batch_norm.py',
                             'run', [], 'is a sweep config (it has '
                             'get_sweep); run it with python -m cnn_jax.sweep'),
    # Run from another folder: `from configs import default` still works.
    'copy_that_imports_the_default': (SWEEP_COPY, 'run', [],
                                      'config.num_epochs must be >= 1; got 0'),
    'workdir_is_a_file': (None, 'afile', [], 'is a file, not a folder'),
    'workdir_read_only': (None, '/sys/cnn_jax_run', [],
                          'workdir /sys/cnn_jax_run cannot be written'),
}


@pytest.fixture(scope='module')
def refusals(tmp_path_factory):
  """Each BAD_INPUTS case, and a workdir in use, run as its command line in
  a folder of its own, all in one process (_util.run_commands): {name:
  (exit status, stderr, the folder's files before, after)}."""
  # The copy of a config first, before any command imported configs/.
  names = sorted(BAD_INPUTS, key=lambda n: n != 'copy_that_imports_the_default')
  folders, commands = [], []
  for name in names:
    config, workdir, args, _ = BAD_INPUTS[name]
    folder = tmp_path_factory.mktemp(name)
    if config and not config.startswith('/'):
      (folder / 'my_config.py').write_text(config)
      config = 'my_config.py'
    (folder / 'afile').write_text('')
    folders.append((folder, sorted(os.listdir(folder))))
    commands.append(('cnn_jax.main', [
        f'--config={config or _util.ROOT + "/configs/default.py"}',
        f'--workdir={workdir}', *args], folder, None))
  in_use = tmp_path_factory.mktemp('in_use')
  holder = _util.hold_folder(in_use / 'run')
  names.append('in_use')
  folders.append((in_use / 'run', ['.lock']))
  commands.append(('cnn_jax.main', [
      f'--config={_util.ROOT}/configs/default.py', f'--workdir={in_use}/run'],
                   _util.ROOT, None))
  try:
    results = _util.run_commands(commands)
  finally:
    holder.kill()
    holder.wait()
  refused = {name: (code, err, before, sorted(os.listdir(folder)))
             for name, (folder, before), (code, _, err) in zip(
                 names, folders, results)}
  refused['in_use'] += (holder.pid,)
  return refused


def _one_error_line(code, err):
  assert code == 2, err[-2000:]
  errors = [l for l in err.splitlines() if l.startswith('error: ')]
  assert len(errors) == 1, err[-2000:]
  assert 'Traceback' not in err
  return errors[0]


@pytest.mark.parametrize('name', sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_leaves_nothing(refusals, name):
  code, err, before, after = refusals[name]
  assert BAD_INPUTS[name][3] in _one_error_line(code, err)
  assert after == before  # Nothing left behind.


def test_a_workdir_in_use_is_refused_at_once(refusals):
  code, err, before, after, holder = refusals['in_use']
  line = _one_error_line(code, err)
  assert f'is in use by process {holder} on ' in line
  assert after == before == ['.lock']  # Nothing of a run.


@pytest.mark.slow
def test_a_diverged_run_is_one_line_and_exit_status_1(tmp_path,
                                                      real_data_dir):
  """Also: a workdir given with ~ is the home folder's."""
  data = _util.tiny_config().data
  data.update(data_dir=real_data_dir, manual_dir=_util.MANUAL_DIR, cache=True)
  input_pipeline.load_splits(data)
  env = dict(_util.subprocess_env(1), HOME=str(tmp_path))
  proc = subprocess.run(
      [sys.executable, '-m', 'cnn_jax.main',
       f'--config={_util.ROOT}/configs/default.py', '--workdir=~/run',
       '--config.learning_rate=1e30', '--config.batch_size=50',
       '--config.data.num_train_examples=200',
       f'--config.data.data_dir={real_data_dir}'],
      cwd=_util.ROOT, capture_output=True, text=True, env=env, timeout=600)
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert proc.stderr.splitlines()[-1] == (
      'error: training diverged at epoch 1: train loss nan is not finite; '
      'summary.json records it')
  with open(tmp_path / 'run' / 'summary.json') as f:
    assert json.load(f)['status'] == 'diverged'


def _interrupt(cmd, moment):
  """Runs `cmd` and sends it SIGINT, as Ctrl-C does, once a line of its
  stderr holds `moment`; returns its exit status and stderr."""
  proc = subprocess.Popen(cmd, cwd=_util.ROOT, env=_util.subprocess_env(1),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
  try:
    lines = []
    for line in proc.stderr:
      lines.append(line)
      if moment in line:
        proc.send_signal(signal.SIGINT)
        break
    lines.append(proc.communicate(timeout=300)[1])
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  return proc.returncode, ''.join(lines)


@pytest.mark.slow
@pytest.mark.parametrize('command, args, line', [
    ('main', [], 'interrupted; run the same command again to resume from '
                 'the last checkpoint'),
    ('main', ['--start_over'], 'interrupted; run the command again without '
                               '--start_over to resume from the last '
                               'checkpoint'),
    ('sweep', [], 'interrupted; run the same command again to resume: '
                  'finished points are kept, and the interrupted one '
                  'resumes from its last checkpoint'),
])
def test_ctrl_c_is_one_line_saying_how_to_resume(tmp_path, real_data_dir,
                                                 command, args, line):
  """Interrupted while epoch 2's checkpoint is being written: it is
  finished first (at the interpreter's shutdown orbax's commit failed, with
  a traceback, and the checkpoint was lost)."""
  data = _util.tiny_config().data
  data.update(data_dir=real_data_dir, manual_dir=_util.MANUAL_DIR, cache=True)
  input_pipeline.load_splits(data)
  config = {'main': 'default.py', 'sweep': 'sweeps/seeds.py'}[command]
  code, err = _interrupt(
      [sys.executable, '-m', f'cnn_jax.{command}',
       f'--config={_util.ROOT}/configs/{config}',
       f'--workdir={tmp_path / "run"}', '--config.num_epochs=100',
       '--config.checkpoint_interval_s=0', '--config.batch_size=50',
       '--config.data.num_train_examples=100',
       f'--config.data.data_dir={real_data_dir}', *args], 'epoch 2/100')
  assert code == 130, err[-3000:]
  assert 'Traceback' not in err, err[-3000:]
  assert err.splitlines()[-1] == line, err[-3000:]
  # The run's folder, or the sweep's first point's.
  assert list((tmp_path / 'run').glob('**/checkpoints/2')), command


def test_ctrl_c_during_a_garbage_collector_callback_is_not_lost():
  """Python prints a KeyboardInterrupt raised in a gc callback (JAX has
  one) or a finalizer as 'Exception ignored' and drops it; the command went
  on."""
  arrived = []

  def callback(phase, info):
    del info
    if phase == 'start' and not arrived:
      arrived.append(True)
      os.kill(os.getpid(), signal.SIGINT)
      for _ in range(10_000):  # Python code, where the handler runs.
        pass

  hook = sys.unraisablehook
  sys.unraisablehook = cli._resend_dropped_interrupts(hook)  # pylint: disable=protected-access
  gc.callbacks.append(callback)
  try:
    with pytest.raises(KeyboardInterrupt):
      gc.collect()
      time.sleep(5)  # The signal comes again, and ends the sleep.
  finally:
    gc.callbacks.remove(callback)
    sys.unraisablehook = hook
  assert arrived
