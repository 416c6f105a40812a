"""Classifying image files with a trained run."""

import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from cnn_jax import evaluate
from cnn_jax import input_pipeline
from cnn_jax import predict
import _util


def _test_images(n):
  with tfds.testing.mock_data(num_examples=48):
    return input_pipeline.load_splits(_util.tiny_config().data)['test'][
        'image'][:n]


def test_a_test_image_saved_as_png_gets_the_models_own_prediction(
    trained_run, tmp_path):
  original = _test_images(1)[0]
  Image.fromarray(original[..., 0]).save(tmp_path / 'test.png')
  image, inverted = predict.load_image(str(tmp_path / 'test.png'))
  # Already the dataset's form (light on dark, 28x28): unchanged.
  assert not inverted
  np.testing.assert_array_equal(image, original)
  trained = evaluate.load(str(trained_run))
  [top] = predict.top_classes(trained, image[None])
  expected = np.asarray(jax.nn.softmax(evaluate.logits(trained,
                                                       original[None])))[0]
  assert [name for name, _ in top] == [trained.class_names[c] for c in
                                       np.argsort(-expected)[:3]]
  np.testing.assert_allclose([p for _, p in top], np.sort(expected)[::-1][:3],
                             rtol=1e-5)


def test_a_dark_garment_on_a_light_photo_is_inverted_and_scaled(tmp_path):
  photo = np.full((120, 80, 3), 230, np.uint8)  # Light grey table...
  photo[30:90, 20:60] = (60, 30, 20)  # ...and a dark brown garment on it.
  Image.fromarray(photo).save(tmp_path / 'photo.jpg')
  image, inverted = predict.load_image(str(tmp_path / 'photo.jpg'))
  assert inverted
  assert image.shape == (28, 28, 1) and image.dtype == np.uint8
  # The dataset's polarity: a dark background, the garment light.
  assert image[0, 0, 0] < 40 and image[14, 14, 0] > 180


def test_the_cli_classifies_images_and_names_a_non_image(trained_run,
                                                         tmp_path):
  Image.fromarray(_test_images(1)[0, ..., 0]).save(tmp_path / 'test.png')
  Image.fromarray(np.full((50, 40, 3), 200, np.uint8)).save(
      tmp_path / 'plain.jpg')
  (tmp_path / 'notes.txt').write_text('not an image')
  files = [str(tmp_path / n) for n in ('test.png', 'notes.txt', 'plain.jpg')]
  proc = subprocess.run(
      [sys.executable, '-m', 'cnn_jax.predict', f'--workdir={trained_run}',
       *files], cwd=_util.ROOT, capture_output=True, text=True, timeout=300,
      env=_util.subprocess_env(1))
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert proc.stderr.strip() == (
      f'error: {files[1]}: not an image Pillow can read (PNG, JPEG, ...)')
  lines = proc.stdout.splitlines()
  # The files around the bad one are still classified, in order.
  assert [line.split(': ')[0] for line in lines] == [files[0], files[2]]
  for line in lines:
    assert line.count('%') == predict.TOP_K, line
