"""Crash safety: a run killed with SIGKILL at any moment resumes exactly.

Real processes, really killed: during a checkpoint write, at a random time,
and after the last epoch but before the summary. The resumed run must end
with the numbers of the run that was never interrupted, bit for bit.
"""

import json
import os
import random
import sys
import time

from cnn_jax import input_pipeline
import _util


def _command(workdir, data_dir):
  # 10 steps per epoch on a slice of the real data: each epoch's checkpoint
  # write is a separate moment to kill at.
  return [sys.executable, '-m', 'cnn_jax.main',
          f'--config={_util.ROOT}/configs/default.py', f'--workdir={workdir}',
          '--config.num_epochs=4', '--config.batch_size=50',
          '--config.data.num_train_examples=500',
          '--config.data.num_validation_examples=500',
          f'--config.data.data_dir={data_dir}']


def _kill_when(workdir, data_dir, moment):
  """Kills a run once `moment(checkpoint folder names, seconds)` is true."""
  checkpoints = os.path.join(workdir, 'checkpoints')
  names = lambda: (os.listdir(checkpoints) if os.path.isdir(checkpoints)
                   else [])
  return _util.kill_when(_command(workdir, data_dir),
                         lambda seconds: moment(names(), seconds))


def _numbers(workdir):
  """Everything a run computed, without its timings."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    epochs = [json.loads(line) for line in f]
  for r in epochs:
    del r['epoch_time_s'], r['images_per_sec']
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  keep = ('status', 'test_accuracy', 'test_loss', 'best_val_accuracy',
          'best_val_epoch', 'final_val_accuracy', 'epochs_completed')
  return epochs, {k: summary[k] for k in keep}


def test_kill_9_at_any_moment_then_resume_gives_the_same_numbers(
    tmp_path, real_data_dir):
  data = _util.tiny_config().data
  data.update(data_dir=real_data_dir, manual_dir=_util.MANUAL_DIR, cache=True)
  input_pipeline.load_splits(data)  # Prepared and cached once.
  straight, killed = tmp_path / 'straight', tmp_path / 'killed'
  t0 = time.time()
  assert not _kill_when(straight, real_data_dir, lambda names, s: False)
  duration = time.time() - t0

  rng = random.Random()
  epoch = rng.randint(1, 4)
  delay = rng.uniform(0, duration)
  print(f'killed while writing epoch {epoch}; then after {delay:.2f} s')
  # While orbax writes epoch's checkpoint (it renames the folder when done).
  assert _kill_when(killed, real_data_dir, lambda names, s: any(
      n.startswith(f'{epoch}.') and 'tmp' in n for n in names))
  # At a random moment, whatever the run is doing then.
  _kill_when(killed, real_data_dir, lambda names, s: s > delay)
  # After the last epoch's checkpoint, before the summary.
  _kill_when(killed, real_data_dir, lambda names, s: '4' in names)
  assert not os.path.exists(killed / 'summary.json') or (
      _numbers(killed)[1]['epochs_completed'] == 4)
  _kill_when(killed, real_data_dir, lambda names, s: False)
  assert _numbers(killed) == _numbers(straight)
