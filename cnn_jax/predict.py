"""Classifies the user's own images with a trained run.

  python -m cnn_jax.predict --workdir=DIR [--checkpoint=best|latest] IMAGE...

Each file (PNG, JPEG or any format Pillow reads; any size, colour or not)
is first made to look like a Fashion-MNIST image (`load_image`), then the
top classes are printed with their probabilities, one line per file:

  shoe.jpg: Sneaker 91.2%, Sandal 6.0%, Ankle boot 2.7% (inverted)

A file that cannot be read faithfully as one picture (not a regular file,
not an image, an animation, over Pillow's size limit, float pixels outside
[0, 1]) gets an `error:` line naming it, the others are still classified,
and the exit status is then 2.
"""

import os
import stat
import sys
import warnings

from absl import flags
import jax
import numpy as np
from PIL import Image
from PIL import ImageOps
from PIL import UnidentifiedImageError

from cnn_jax import cli
from cnn_jax import errors
from cnn_jax import evaluate
from cnn_jax import input_pipeline
from cnn_jax import run as run_lib

FLAGS = flags.FLAGS

TOP_K = 3
# The frame, in pixels of the 28x28 image, that `load_image` takes for the
# background when it decides whether to invert.
_BORDER = 3
# How `load_image` names what is not a regular file, by its `os.stat` mode.
_NOT_FILES = ((stat.S_ISDIR, 'a folder'), (stat.S_ISFIFO, 'a named pipe'),
              (stat.S_ISSOCK, 'a socket'), (stat.S_ISCHR, 'a device'),
              (stat.S_ISBLK, 'a device'))


class ImageError(errors.UserError):
  """A file that cannot be read as an image."""


def load_image(path: str) -> tuple[np.ndarray, bool]:
  """An image file as the model's input: uint8 [28, 28, 1], and whether it
  was inverted.

  Fashion-MNIST images are grey, 28x28, a light garment centred on black.
  So: to grey, by the image's own range (`_grey`); scaled to fit 28x28 with
  its aspect ratio kept, the rest filled with the image's own background
  (the median of its border); and inverted if its border is brighter than
  its centre, as for a photo of a dark garment on a light table.

  Raises ImageError, one line naming `path`, for what is not a regular file
  (a named pipe would block the read), not an image, more than one frame,
  larger than Pillow's decompression-bomb limit, or pixels out of range.
  """
  _check_regular_file(path)
  try:
    with warnings.catch_warnings():
      # Pillow's notes on a damaged file (a skipped TIFF tag, corrupt EXIF):
      # the file is refused in one line, or read as far as it can be.
      warnings.simplefilter('ignore', UserWarning)
      # Between one and two times its limit Pillow only warns, and decodes.
      warnings.simplefilter('error', Image.DecompressionBombWarning)
      with Image.open(path) as image:
        _check_one_frame(image, path)
        grey = _grey(ImageOps.exif_transpose(image), path)
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    raise ImageError(f'{path}: too large: {_one_line(e)}') from None
  except UnidentifiedImageError:
    raise ImageError(f'{path}: not an image Pillow can read (PNG, JPEG, '
                     f'...)') from None
  except (OSError, ValueError, TypeError, EOFError, SyntaxError) as e:
    # What Pillow raises for a damaged or truncated file (a TIFF without
    # its size: TypeError), and an OSError for a failed read.
    reason = (e.strerror if isinstance(e, OSError) and e.strerror
              else f'cannot be read as an image ({_one_line(e)})')
    raise ImageError(f'{path}: {reason}') from None
  pixels = np.asarray(grey)
  border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0],
                           pixels[:, -1]])
  side = input_pipeline.IMAGE_SHAPE[0]
  image = np.asarray(ImageOps.pad(grey, (side, side),
                                  color=int(np.median(border))))
  frame = np.ones(image.shape, bool)
  frame[_BORDER:-_BORDER, _BORDER:-_BORDER] = False
  inverted = image[frame].mean() > image[~frame].mean()
  if inverted:
    image = 255 - image
  return image[..., None].astype(np.uint8), bool(inverted)


def _one_line(e: BaseException) -> str:
  return ' '.join(str(e).split())


def _check_regular_file(path: str) -> None:
  """Raises ImageError unless `path` is a regular file (or a link to one):
  opening a named pipe waits for a writer, a device may never end."""
  try:
    mode = os.stat(path).st_mode
  except OSError as e:
    raise ImageError(f'{path}: {e.strerror}') from None
  if not stat.S_ISREG(mode):
    kind = next((kind for test, kind in _NOT_FILES if test(mode)),
                'not a regular file')
    raise ImageError(f'{path}: {kind}, not an image file')


def _check_one_frame(image: Image.Image, path: str) -> None:
  """Raises ImageError for an animation or a multi-page file: which frame
  to classify is the user's choice. An MPO (a camera's JPEG with extra
  views) is read as its first, primary image."""
  if getattr(image, 'is_animated', False) and image.format != 'MPO':
    what = 'page' if image.format == 'TIFF' else 'frame'
    kind = 'an image of' if what == 'page' else 'an animated image of'
    raise ImageError(f'{path}: {kind} {image.n_frames} {what}s; save the '
                     f'{what} to classify as an image of its own')


def _grey(image: Image.Image, path: str) -> Image.Image:
  """`image` as 8-bit grey, read by its own range.

  16-bit images are scaled by 65535 / 255, floats by 255 from [0, 1], so
  that the same picture saved in 8 bits, 16 bits or float reads the same;
  32-bit integers are scaled from 0..255 if all fit there, else from
  0..65535 (Pillow reads 16-bit PGMs so). Pillow's own conversion would
  clip these at 255 instead: a 16-bit photo turns white, a float one black.
  """
  if image.mode == 'LAB':  # Its first band is the lightness.
    return image.getchannel('L')
  if not (image.mode in ('I', 'F') or image.mode.startswith('I;16')):
    if image.has_transparency_data:
      return _against_background(image)
    return ImageOps.grayscale(image)
  pixels = np.asarray(image)
  if image.mode == 'F':
    if not np.isfinite(pixels).all():
      raise ImageError(f'{path}: float pixels that are not finite (NaN or '
                       f'infinite)')
    low, high = float(pixels.min()), float(pixels.max())
    if low < 0 or high > 1:
      raise ImageError(f'{path}: float pixels from {low:g} to {high:g}; a '
                       f'float image must lie in [0, 1]')
    white = 1.0
  else:
    low, high = int(pixels.min()), int(pixels.max())
    if low < 0 or high > 65535:
      raise ImageError(f'{path}: integer pixels from {low} to {high}; an '
                       f'integer image must lie in 0..65535')
    white = 255 if image.mode == 'I' and high <= 255 else 65535
  return Image.fromarray(np.round(pixels.astype(np.float64) * (255 / white)
                                  ).astype(np.uint8))


def _against_background(image: Image.Image) -> Image.Image:
  """Grey, with transparent pixels set to black or white, whichever differs
  more from the opaque pixels: the colour a file stores under them is not
  what a viewer shows, and a cut-out garment needs its contrast."""
  rgba = image.convert('RGBA')
  grey = np.asarray(rgba.convert('L'), np.float64)
  alpha = np.asarray(rgba.getchannel('A'), np.float64) / 255
  opaque = alpha > 0.5
  if not opaque.any():
    return rgba.convert('L')
  background = 255.0 if grey[opaque].mean() < 128 else 0.0
  return Image.fromarray(np.round(grey * alpha + background * (1 - alpha)
                                  ).astype(np.uint8))


def top_classes(trained: evaluate.Trained, images: np.ndarray,
                k: int = TOP_K) -> list[list[tuple[str, float]]]:
  """For each image, the k most probable classes with their probabilities."""
  probabilities = np.asarray(jax.nn.softmax(evaluate.logits(trained, images)))
  names = trained.class_names
  return [[(names[c], float(p[c])) for c in np.argsort(-p)[:k]]
          for p in probabilities]


def main(argv: list[str]) -> None:
  paths = argv[1:]
  if not paths:
    cli.fail('name one or more image files: python -m cnn_jax.predict '
             '--workdir=DIR IMAGE...')
  cli.start()
  try:
    trained = evaluate.load(os.path.expanduser(FLAGS.workdir),
                            FLAGS.checkpoint)
  except errors.UserError as e:
    cli.fail(str(e))
  loaded = []
  for path in paths:
    try:
      loaded.append((path,) + load_image(path))
    except ImageError as e:
      print(f'error: {e}', file=sys.stderr)
  if loaded:
    images = np.stack([image for _, image, _ in loaded])
    for (path, _, inverted), top in zip(loaded, top_classes(trained, images)):
      classes = ', '.join(f'{name} {p:.1%}' for name, p in top)
      print(f'{path}: {classes}{" (inverted)" if inverted else ""}')
  if len(loaded) < len(paths):
    sys.exit(2)


if __name__ == '__main__':
  cli.define_flags(config=False, distributed=False)
  flags.DEFINE_enum('checkpoint', 'best', list(run_lib.CHECKPOINT_CHOICES),
                    'best: the weights of the best validation epoch; '
                    "latest: the last epoch's.")
  cli.run(main)
