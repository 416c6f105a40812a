"""How a trained model answers shifted images: the translation probe.

The seed claims that pooling makes a ConvNet invariant to small
translations. Two measures, on the test split, of one trained run:
accuracy when every image is shifted by d pixels (zero fill, as the
background is 0), and how much the penultimate features (the input of the
last dense layer) move under a shift of 1 or 2 pixels, relative to their
size.
"""

from typing import Sequence

import chex
import jax
import numpy as np

from cnn_jax import evaluate
from cnn_jax import input_pipeline

# (rows, columns) of a one-pixel move; each result averages the four.
DIRECTIONS = {'up': (-1, 0), 'down': (1, 0), 'left': (0, -1),
              'right': (0, 1)}


def shift(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
  """[N, H, W, C] moved by dy rows and dx columns; what enters is 0."""
  out = np.zeros_like(images)
  h, w = images.shape[1:3]
  if abs(dy) >= h or abs(dx) >= w:
    return out
  src_y, dst_y = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy),
                                                           h - max(0, -dy))
  src_x, dst_x = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx),
                                                           w - max(0, -dx))
  out[:, dst_y, dst_x] = images[:, src_y, src_x]
  return out


def features(trained: evaluate.Trained, images: np.ndarray,
             batch_size: int = 1000) -> np.ndarray:
  """The penultimate features of uint8 images [N, 28, 28, 1], [N, D]."""

  @jax.jit
  def apply(x):
    _, state = trained.model.apply(
        trained.variables, input_pipeline.normalize(x), train=False,
        mutable=['intermediates'])
    return state['intermediates']['features'][0]

  out = [np.asarray(apply(images[i:i + batch_size]))
         for i in range(0, len(images), batch_size)]
  return np.concatenate(out)


def shifted_accuracy(trained: evaluate.Trained, images: np.ndarray,
                     labels: np.ndarray, shifts: Sequence[int]
                     ) -> dict[str, list[float]]:
  """{direction: accuracy at each shift}, on images shifted that far."""
  chex.assert_rank(images, 4)
  chex.assert_equal_shape_prefix((images, labels), 1)
  result = {}
  for name, (dy, dx) in DIRECTIONS.items():
    result[name] = [
        float((evaluate.logits(trained, shift(images, dy * d, dx * d))
               .argmax(-1) == labels).mean()) for d in shifts]
  return result


def feature_change(trained: evaluate.Trained, images: np.ndarray,
                   shifts: Sequence[int]) -> dict[str, list[float]]:
  """{direction: mean of |f(shifted x) - f(x)| / |f(x)| at each shift}.

  Relative, so models whose features differ in scale compare; images whose
  features are all zero are left out of the mean.
  """
  base = features(trained, images)
  size = np.linalg.norm(base, axis=1)
  keep = size > 0
  result = {}
  for name, (dy, dx) in DIRECTIONS.items():
    result[name] = []
    for d in shifts:
      moved = features(trained, shift(images, dy * d, dx * d))
      change = np.linalg.norm(moved - base, axis=1)
      result[name].append(float((change[keep] / size[keep]).mean()))
  return result
