"""Classifies the user's own images with a trained run.

  python -m cnn_jax.predict --workdir=DIR [--checkpoint=best|latest] IMAGE...

Each file (PNG, JPEG or any format Pillow reads; any size, colour or not)
is first made to look like a Fashion-MNIST image (`load_image`), then the
top classes are printed with their probabilities, one line per file:

  shoe.jpg: Sneaker 91.2%, Sandal 6.0%, Ankle boot 2.7% (inverted)

A file that is not an image gets an `error:` line naming it, the others are
still classified, and the exit status is then 2.
"""

import os
import sys

from absl import app
from absl import flags
import jax
import numpy as np
from PIL import Image
from PIL import ImageOps

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


class ImageError(errors.UserError):
  """A file that cannot be read as an image."""


def load_image(path: str) -> tuple[np.ndarray, bool]:
  """An image file as the model's input: uint8 [28, 28, 1], and whether it
  was inverted.

  Fashion-MNIST images are grey, 28x28, a light garment centred on black.
  So: to grey; scaled to fit 28x28 with its aspect ratio kept, the rest
  filled with the image's own background (the median of its border); and
  inverted if its border is brighter than its centre, as for a photo of a
  dark garment on a light table.
  """
  try:
    with Image.open(path) as image:
      grey = ImageOps.grayscale(ImageOps.exif_transpose(image))
  except (OSError, Image.DecompressionBombError) as e:
    # PIL.UnidentifiedImageError is an OSError, as are a missing file and
    # a folder.
    reason = (e.strerror if getattr(e, 'strerror', None)
              else 'not an image Pillow can read (PNG, JPEG, ...)')
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
  app.run(main, flags_parser=cli.parse_flags)
