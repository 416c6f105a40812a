"""Crash safety: a run killed with SIGKILL at any moment resumes exactly,
whichever epochs have checkpoints.

Real processes, really killed: before any checkpoint, during a checkpoint
write, and at a random time (training, checkpointing, testing after the last
checkpoint or writing the summary). The resumed run must end
with the numbers of the run that was never interrupted, bit for bit.
"""

import json
import os
import random
import shutil
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from cnn_jax import errors
from cnn_jax import input_pipeline
from cnn_jax import models
from cnn_jax import records
from cnn_jax import run as run_lib
from cnn_jax import train
import _util


EPOCHS = 3


def _command(workdir, data_dir, interval_s):
  # 10 steps per epoch on a slice of the real data: with interval_s 0, each
  # epoch's checkpoint write is a separate moment to kill at.
  return [sys.executable, '-m', 'cnn_jax.main',
          f'--config={_util.ROOT}/configs/default.py', f'--workdir={workdir}',
          f'--config.num_epochs={EPOCHS}', '--config.batch_size=50',
          '--config.data.num_train_examples=500',
          '--config.data.num_validation_examples=500',
          f'--config.checkpoint_interval_s={interval_s}',
          f'--config.data.data_dir={data_dir}']


def _kill_when(workdir, data_dir, moment, interval_s=0):
  """Kills a run once `moment(checkpoint folder names, seconds)` is true."""
  checkpoints = os.path.join(workdir, 'checkpoints')
  names = lambda: (os.listdir(checkpoints) if os.path.isdir(checkpoints)
                   else [])
  return _util.kill_when(_command(workdir, data_dir, interval_s),
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


@pytest.mark.slow
def test_kill_9_at_any_moment_then_resume_gives_the_same_numbers(
    tmp_path, real_data_dir):
  """One run killed three times, each in another phase, then finished.

  Its first invocation checkpoints only at the end, as the default interval
  on a GPU does; the later ones every epoch, so that checkpoint writes are
  moments to kill at (the interval may change on resume).
  """
  data = _util.tiny_config().data
  data.update(data_dir=real_data_dir, manual_dir=_util.MANUAL_DIR, cache=True)
  input_pipeline.load_splits(data)  # Prepared and cached once.
  straight, killed = tmp_path / 'straight', tmp_path / 'killed'
  # When the uninterrupted run's first epoch ends, and the run itself.
  first_epoch = []

  def watch(names, seconds):
    del names
    if not first_epoch and (straight / 'metrics.jsonl').exists():
      first_epoch.append(seconds)
    return False

  t0 = time.time()
  assert not _kill_when(straight, real_data_dir, watch, 1e9)
  duration = time.time() - t0
  assert os.listdir(straight / 'checkpoints') == [str(EPOCHS)]

  rng = random.Random()
  epoch = rng.randint(1, EPOCHS - 1)
  delay = rng.uniform(first_epoch[0], duration)
  print(f'killed while writing epoch {epoch}, then after {delay:.2f} s')
  # Killed after 2 epochs, none of them checkpointed.
  assert _kill_when(killed, real_data_dir,
                    lambda names, s: len(records.read_json_lines(
                        str(killed / 'metrics.jsonl'))) >= 2, 1e9)
  assert not [n for n in os.listdir(killed / 'checkpoints') if n.isdigit()]
  # At least epoch 1's steps: its events were written before epoch 2's line.
  assert len(_util.tensorboard_scalars(killed, 'train/loss')) >= 10
  # Trained again from the start, and killed while orbax writes epoch's
  # checkpoint (it renames the folder when done).
  assert _kill_when(killed, real_data_dir, lambda names, s: any(
      n.startswith(f'{epoch}.') and 'tmp' in n for n in names))
  # At a random moment from the end of the uninterrupted run's first epoch
  # to its end, whatever this run is doing then: training, checkpointing,
  # testing after the last checkpoint, or writing the summary.
  _kill_when(killed, real_data_dir, lambda names, s: s > delay)
  assert not os.path.exists(killed / 'summary.json') or (
      _numbers(killed)[1]['epochs_completed'] == EPOCHS)
  _kill_when(killed, real_data_dir, lambda names, s: False)
  assert _numbers(killed) == _numbers(straight)
  # TensorBoard shows each step once, the last invocation's to write it:
  # what the killed ones wrote after their last checkpoint is hidden, even
  # where a rerun resumed from no checkpoint.
  losses = _util.tensorboard_scalars(straight, 'train/loss')
  assert len(losses) == 10 * EPOCHS
  assert _util.tensorboard_scalars(killed, 'train/loss') == losses


def test_the_checkpoint_clock_waits_its_interval(monkeypatch):
  now = [100.0]
  monkeypatch.setattr(run_lib.time, 'monotonic', lambda: now[0])
  clock = run_lib.CheckpointClock(10)
  due = []
  for _ in range(6):
    now[0] += 4  # A 4-second epoch.
    due.append(clock.due())
  assert due == [False, False, True, False, False, True]
  every = run_lib.CheckpointClock(0)
  assert every.due() and every.due()


def _a_run(workdir):
  config = _util.tiny_config()
  model = models.create_model(config.model)
  tx = train.create_optimizer(config, 4)
  state = jax.device_get(train.create_train_state(jax.random.key(0), model,
                                                  tx))
  run = run_lib.Run(str(workdir), config, state, steps_per_epoch=4,
                    learning_rate=train.learning_rate_fn(config, 4))
  return run, state


def _end_epoch(run, state, epoch, checkpoint):
  """Ends `epoch` with a state whose step counter says which epoch it is."""
  record = {'epoch': epoch, 'train_loss': 1.0, 'train_accuracy': 0.5,
            'val_loss': 1.0, 'val_accuracy': epoch / 10, 'epoch_time_s': 1.0,
            'images_per_sec': 1.0}
  steps = {'loss': np.ones(4), 'accuracy': np.ones(4)}
  run.end_epoch(state.replace(step=np.int32(epoch)), record, 1.0, steps,
                checkpoint=checkpoint)


def test_a_run_that_ends_or_diverges_checkpoints_its_last_good_epoch(
    tmp_path):
  finished, state = _a_run(tmp_path / 'finished')
  for epoch in (1, 2):
    _end_epoch(finished, state, epoch, checkpoint=epoch == 1)
  finished.finish({'accuracy': 0.5, 'loss': 1.0}, 1.0)
  assert sorted(os.listdir(tmp_path / 'finished' / 'checkpoints')) == [
      '1', '2']
  assert int(_a_run(tmp_path / 'finished')[0].state.step) == 2

  diverged, state = _a_run(tmp_path / 'diverged')
  for epoch in (1, 2):
    _end_epoch(diverged, state, epoch, checkpoint=False)
  diverged.diverge(3, float('nan'), 1.0)
  assert os.listdir(tmp_path / 'diverged' / 'checkpoints') == ['2']
  # What a rerun resumes from: epoch 2's state, best weights and meta.
  again, _ = _a_run(tmp_path / 'diverged')
  assert again.epoch == 2 and again.meta['best_val_epoch'] == 2
  assert int(again.state.step) == 2


def _flip_bytes(path):
  """Inverts 8 bytes in the middle of `path`, as a failing disk might."""
  data = bytearray(path.read_bytes())
  middle = len(data) // 2
  data[middle:middle + 8] = bytes(b ^ 0xFF for b in data[middle:middle + 8])
  path.write_bytes(bytes(data))


@pytest.mark.parametrize('damage', ['flipped state', 'no meta'])
def test_a_damaged_checkpoint_stops_the_resume_until_it_is_removed(
    tmp_path, damage):
  run, state = _a_run(tmp_path)
  for epoch in (1, 2):
    _end_epoch(run, state, epoch, checkpoint=True)
  run.finish({'accuracy': 0.5, 'loss': 1.0}, 1.0)
  checkpoint = tmp_path / 'checkpoints' / '2'
  if damage == 'flipped state':
    # Read back without error, these would be a wrong optimizer state.
    _flip_bytes(max((p for p in (checkpoint / 'state').rglob('*')
                     if p.is_file()), key=lambda p: p.stat().st_size))
  else:
    shutil.rmtree(checkpoint / 'meta')
  with pytest.raises(errors.UserError) as error:
    _a_run(tmp_path)
  message = str(error.value)
  assert message.startswith(f'checkpoint {checkpoint} cannot be read ('), (
      message)
  assert message.endswith(
      "); delete that folder to resume from epoch 1's checkpoint, or pass "
      '--start_over to train this run again'), message
  # As the message says: without it, the run resumes from epoch 1.
  shutil.rmtree(checkpoint)
  again, _ = _a_run(tmp_path)
  assert again.epoch == 1 and int(again.state.step) == 1


def test_a_failed_checkpoint_write_is_one_line_and_loses_nothing(tmp_path,
                                                                 caplog):
  run, state = _a_run(tmp_path)
  _end_epoch(run, state, 1, checkpoint=True)
  run.finish({'accuracy': 0.5, 'loss': 1.0}, 1.0)
  run, state = _a_run(tmp_path)
  # The checkpoint's arrays are larger; the run's JSON files are not.
  with _util.writes_limited_to(20_000), pytest.raises(errors.UserError) as error:
    _end_epoch(run, state, 2, checkpoint=True)
    run.finish({'accuracy': 0.5, 'loss': 1.0}, 1.0)
  folder = tmp_path / 'checkpoints'
  assert str(error.value) == (
      f'cannot write the checkpoint of epoch 2 in {folder} (File too '
      f'large); free space or fix the folder, then rerun the same command: '
      f"the run resumes from epoch 1's checkpoint")
  # orbax's own reports of the failure, a traceback each, are not shown.
  assert not [r for r in caplog.records if r.exc_info], caplog.text
  # Nothing half-written is left, and nothing is lost.
  assert os.listdir(folder) == ['1']
  again, _ = _a_run(tmp_path)
  assert again.epoch == 1 and int(again.state.step) == 1


def test_a_full_disk_is_found_before_a_checkpoint_is_written(tmp_path):
  disk = tmp_path / 'disk'
  disk.mkdir()
  if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=4m', 'tmpfs',
                     str(disk)], capture_output=True).returncode:
    pytest.skip('mounting a small tmpfs needs root')
  try:
    workdir = disk / 'run'
    run, state = _a_run(workdir)
    _end_epoch(run, state, 1, checkpoint=True)
    run.finish({'accuracy': 0.5, 'loss': 1.0}, 1.0)
    run, state = _a_run(workdir)
    # Room for the epoch's JSON lines, not for its checkpoint.
    with open(disk / 'filler', 'wb') as f:
      f.write(bytes(shutil.disk_usage(disk).free - 64 * 1024))
    with pytest.raises(errors.UserError) as error:
      _end_epoch(run, state, 2, checkpoint=True)
    folder = workdir / 'checkpoints'
    assert str(error.value).startswith(
        f'cannot write the checkpoint of epoch 2 in {folder} (No space left '
        f'on device: '), str(error.value)
    assert os.listdir(folder) == ['1']
    os.remove(disk / 'filler')
    again, _ = _a_run(workdir)
    assert again.epoch == 1 and int(again.state.step) == 1
  finally:
    subprocess.run(['umount', '--lazy', str(disk)], check=True)


def test_a_folder_a_run_did_not_write_is_neither_used_nor_cleared(tmp_path):
  """A sweep folder, a folder with another program's checkpoints/ or
  config.json: a run refuses it, --start_over included (run.clear), and
  deletes nothing; a config.json that cannot be read is one error."""
  sweep_dir = tmp_path / 'sweep'
  sweep_dir.mkdir()
  (sweep_dir / records.SWEEP_FILE).write_text('{}')
  with pytest.raises(run_lib.NotARunFolder, match='is a sweep folder'):
    run_lib.started_config(str(sweep_dir))
  with pytest.raises(run_lib.NotARunFolder, match='is a sweep folder'):
    run_lib.clear(str(sweep_dir))
  other = tmp_path / 'other'
  (other / 'checkpoints').mkdir(parents=True)
  (other / 'checkpoints' / 'model.pt').write_text('precious')
  with pytest.raises(run_lib.NotARunFolder, match='model.pt'):
    run_lib.clear(str(other))
  assert (other / 'checkpoints' / 'model.pt').read_text() == 'precious'
  foreign = tmp_path / 'foreign'
  foreign.mkdir()
  (foreign / 'config.json').write_text('{"my": "settings"}')
  with pytest.raises(run_lib.NotARunFolder, match='no config a run wrote'):
    run_lib.started_config(str(foreign))
  with pytest.raises(run_lib.NotARunFolder, match='no config a run wrote'):
    run_lib.clear(str(foreign))
  assert (foreign / 'config.json').read_text() == '{"my": "settings"}'
  odd = tmp_path / 'odd'
  (odd / 'config.json').mkdir(parents=True)
  with pytest.raises(errors.UserError, match='unreadable'):
    run_lib.started_config(str(odd))
