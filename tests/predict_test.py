"""Classifying image files with a trained run."""

import os
import socket
import struct
import subprocess
import sys
import threading
import zlib

import jax
import numpy as np
from PIL import Image
import pytest
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
  os.mkfifo(tmp_path / 'pipe.png')  # Nobody writes: opening it would block.
  files = [str(tmp_path / n) for n in ('test.png', 'notes.txt', 'pipe.png',
                                       'plain.jpg')]
  proc = subprocess.run(
      [sys.executable, '-m', 'cnn_jax.predict', f'--workdir={trained_run}',
       *files], cwd=_util.ROOT, capture_output=True, text=True, timeout=300,
      env=_util.subprocess_env(1))
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert proc.stderr.splitlines() == [
      f'error: {files[1]}: not an image Pillow can read (PNG, JPEG, ...)',
      f'error: {files[2]}: a named pipe, not an image file']
  lines = proc.stdout.splitlines()
  # The files around the bad ones are still classified, in order.
  assert [line.split(': ')[0] for line in lines] == [files[0], files[3]]
  for line in lines:
    assert line.count('%') == predict.TOP_K, line


def _png_claiming(path, width, height):
  """A PNG header of width x height pixels and no pixel data: Pillow reads
  the size before any pixel."""
  def chunk(kind, data):
    return (struct.pack('>I', len(data)) + kind + data
            + struct.pack('>I', zlib.crc32(kind + data)))
  path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(
      b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0))
                   + chunk(b'IEND', b''))


def test_16_bit_and_float_images_read_as_their_8_bit_original(tmp_path):
  # A garment lit from one side, light on black, with every grey level.
  garment = np.zeros((28, 28), np.uint8)
  garment[4:24, 6:22] = np.linspace(1, 255, 320).round().reshape(20, 16)
  Image.fromarray(garment).save(tmp_path / 'eight.png')
  # The same picture in the wider formats, each at its full range.
  Image.fromarray(garment.astype(np.uint16) * 257).save(
      tmp_path / 'sixteen.png')
  Image.fromarray(garment.astype(np.uint16) * 257).save(
      tmp_path / 'sixteen.tif')
  Image.fromarray(garment.astype(np.float32) / 255).save(
      tmp_path / 'float.tif')
  Image.fromarray(garment.astype(np.int32)).save(tmp_path / 'int32.tif')
  # A 16-bit PGM whose header gives 4095 as white: 12-bit data.
  (tmp_path / 'twelve.pgm').write_bytes(
      b'P5\n28 28\n4095\n' + np.round(garment * (4095 / 255)).astype(
          '>u2').tobytes())
  expected, _ = predict.load_image(str(tmp_path / 'eight.png'))
  np.testing.assert_array_equal(expected[..., 0], garment)
  for name in ('sixteen.png', 'sixteen.tif', 'float.tif', 'int32.tif'):
    image, inverted = predict.load_image(str(tmp_path / name))
    assert not inverted, name
    np.testing.assert_array_equal(image, expected, err_msg=name)
  twelve, _ = predict.load_image(str(tmp_path / 'twelve.pgm'))
  # 12 bits rounded to 8: within one level.
  assert np.abs(twelve.astype(int) - expected).max() <= 1


@pytest.mark.parametrize('name, message', [
    ('animated.gif', 'an animated image of 2 frames; save the frame to '
                     'classify as an image of its own'),
    ('bright.tif', 'float pixels from 0 to 4; a float image must lie in '
                   '[0, 1]'),
    ('huge.png', 'too large'),
])
def test_images_it_cannot_read_faithfully_are_refused(tmp_path, name,
                                                       message):
  frames = [Image.fromarray(np.full((28, 28), v, np.uint8)) for v in (0, 255)]
  frames[0].save(tmp_path / 'animated.gif', save_all=True,
                 append_images=frames[1:])
  Image.fromarray(np.linspace(0, 4, 28 * 28, dtype=np.float32).reshape(
      28, 28)).save(tmp_path / 'bright.tif')
  _png_claiming(tmp_path / 'huge.png', 40_000, 40_000)
  path = str(tmp_path / name)
  with pytest.raises(predict.ImageError) as error:
    predict.load_image(path)
  assert str(error.value).startswith(f'{path}: {message}')
  assert '\n' not in str(error.value)


def test_what_is_not_a_regular_file_is_refused_without_blocking(tmp_path):
  fifo, folder = tmp_path / 'pipe.png', tmp_path / 'folder.png'
  os.mkfifo(fifo)
  folder.mkdir()
  server = socket.socket(socket.AF_UNIX)
  server.bind(str(tmp_path / 'socket.png'))
  cases = {str(fifo): 'a named pipe', str(folder): 'a folder',
           '/dev/null': 'a device', str(tmp_path / 'socket.png'): 'a socket'}
  for path, kind in cases.items():
    outcome = []
    reader = threading.Thread(target=lambda: outcome.append(
        _refusal(path)), daemon=True)
    reader.start()
    reader.join(timeout=20)
    if reader.is_alive():
      # Opening the writing end lets the blocked reader go.
      os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
      pytest.fail(f'{path}: blocked on open')
    assert outcome == [f'{path}: {kind}, not an image file'], path
  server.close()


def _refusal(path):
  try:
    predict.load_image(path)
  except predict.ImageError as e:
    return str(e)
  return None


@pytest.mark.parametrize('garment', [(40, 30, 70), (235, 235, 225)])
@pytest.mark.parametrize('hidden', [(0, 0, 0), (255, 255, 255)])
def test_a_cut_out_garment_reads_light_on_dark_whatever_its_colour(
    tmp_path, garment, hidden):
  """Transparent pixels hold a colour no viewer shows (`hidden`): they are
  the background, set against the garment, not read as they are stored."""
  cut_out = np.zeros((60, 40, 4), np.uint8)
  cut_out[..., :3] = hidden
  cut_out[10:50, 8:32] = (*garment, 255)
  Image.fromarray(cut_out).save(tmp_path / 'cut_out.png')
  image, _ = predict.load_image(str(tmp_path / 'cut_out.png'))
  assert image[14, 14, 0] > 180 and image[0, 0, 0] < 40, image[..., 0]
