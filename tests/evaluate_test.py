"""Re-evaluation of a trained run and its plots."""

import json
import shutil
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from cnn_jax import errors
from cnn_jax import evaluate
from cnn_jax import models
from cnn_jax import run as run_lib
from cnn_jax import train
import _util


def test_evaluate_reproduces_the_summary_and_writes_every_plot(trained_run):
  with tfds.testing.mock_data(num_examples=48):
    result = evaluate.evaluate(str(trained_run))
  with open(trained_run / 'summary.json') as f:
    summary = json.load(f)
  # The best checkpoint is what summary.json tested: the same numbers, here
  # on one device without the training's padding and sharding.
  assert result['epoch'] == summary['best_val_epoch']
  assert result['num_test_examples'] == 48
  np.testing.assert_allclose(result['test_accuracy'],
                             summary['test_accuracy'], atol=1e-6)
  np.testing.assert_allclose(result['test_loss'], summary['test_loss'],
                             rtol=1e-5)
  assert [p.split('/')[-1] for p in result['plots']] == list(evaluate.PLOTS)
  for path in result['plots']:
    with Image.open(path) as image:
      assert image.format == 'PNG'
      assert min(image.size) > 200, (path, image.size)
      image.verify()  # Raises if the file is truncated or corrupt.


def test_latest_is_the_last_epoch_and_best_the_best_validation_epoch(
    trained_run):
  with open(trained_run / 'summary.json') as f:
    best_epoch = json.load(f)['best_val_epoch']
  assert evaluate.load(str(trained_run), 'latest').epoch == 2
  best = evaluate.load(str(trained_run), 'best')
  assert best.epoch == best_epoch
  assert best.class_names[0] == 'T-shirt/top' and len(best.class_names) == 10


def test_a_folder_without_a_run_is_one_error_line(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'cnn_jax.evaluate', f'--workdir={tmp_path}'],
      cwd=_util.ROOT, capture_output=True, text=True, timeout=300,
      env=_util.subprocess_env(1))
  assert proc.returncode == 2
  assert proc.stderr.strip() == (
      f'error: --workdir: {tmp_path} holds no run (config.json is missing); '
      f'give the folder a training run wrote')
  assert not (tmp_path / 'plots').exists()


def _flip_bytes(path):
  """Inverts 8 bytes in the middle of `path`, as a failing disk might."""
  data = bytearray(path.read_bytes())
  middle = len(data) // 2
  data[middle:middle + 8] = bytes(b ^ 0xFF for b in data[middle:middle + 8])
  path.write_bytes(bytes(data))


def _largest_file(folder):
  return max((p for p in folder.rglob('*') if p.is_file()),
             key=lambda p: p.stat().st_size)


@pytest.mark.parametrize('damage', ['flipped weights', 'flipped manifest',
                                    'no meta', 'changed meta'])
def test_a_damaged_checkpoint_is_named_with_what_to_do(trained_run, tmp_path,
                                                       damage):
  workdir = tmp_path / 'run'
  shutil.copytree(trained_run, workdir)
  checkpoint = workdir / 'checkpoints' / '2'
  if damage == 'flipped weights':
    # Read back without error, these would be wrong weights.
    _flip_bytes(_largest_file(checkpoint / 'best'))
  elif damage == 'flipped manifest':
    _flip_bytes(checkpoint / 'best' / 'manifest.ocdbt')
  elif damage == 'no meta':
    shutil.rmtree(checkpoint / 'meta')
  else:
    # Still valid JSON, but not what was saved.
    path = checkpoint / 'meta' / 'metadata'
    meta = json.loads(path.read_text())
    meta['best_val_epoch'] = 3 - meta['best_val_epoch']
    path.write_text(json.dumps(meta))
  with pytest.raises(errors.UserError) as error:
    evaluate.load(str(workdir))
  message = str(error.value)
  assert message.startswith(f'--workdir: checkpoint {checkpoint} cannot be '
                            f'read ('), message
  assert '\n' not in message and message.endswith('--start_over'), message
  # The epoch's own weights, in another item, are intact: offered where
  # they can be read.
  offered = '--checkpoint=latest' in message
  assert offered == ('meta' not in damage), message
  if offered:
    assert evaluate.load(str(workdir), 'latest').epoch == 2


def test_a_run_that_diverged_before_any_checkpoint_says_so(tmp_path):
  config = _util.tiny_config()
  model = models.create_model(config.model)
  tx = train.create_optimizer(config, 4)
  state = jax.device_get(train.create_train_state(jax.random.key(0), model,
                                                  tx))
  run = run_lib.Run(str(tmp_path), config, state, steps_per_epoch=4,
                    learning_rate=train.learning_rate_fn(config, 4))
  run.diverge(1, float('nan'), 1.0)
  with pytest.raises(errors.UserError) as error:
    evaluate.load(str(tmp_path))
  assert str(error.value) == (
      f'--workdir: {tmp_path} holds a run that diverged at epoch 1 (train '
      f'loss nan is not finite) before it wrote a checkpoint: there are no '
      f'weights to load; train it again with other settings and '
      f'--start_over')
