"""Re-evaluation of a trained run and its plots."""

import json
import subprocess
import sys

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from cnn_jax import evaluate
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
