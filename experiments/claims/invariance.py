"""How a trained model answers shifted images: the translation probe.

The seed claims that pooling makes a ConvNet invariant to small
translations. Two measures, on the test split, of one trained run:
accuracy when every image is shifted by d pixels (zero fill, as the
background is 0), and how much the penultimate features (the input of the
last dense layer) move under a shift of 1 or 2 pixels, relative to their
size.
"""

from typing import Callable, Sequence

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


def _model_outputs(trained: evaluate.Trained
                   ) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
  """uint8 images -> (logits, penultimate features), batch by batch.

  One compiled program serves every shift (a batch of 1,000 images; a
  smaller last batch compiles once more).
  """

  @jax.jit
  def apply(x):
    logits, state = trained.model.apply(
        trained.variables, input_pipeline.normalize(x), train=False,
        mutable=['intermediates'])
    return logits, state['intermediates']['features'][0]

  def run(images, batch_size=1000):
    outs = [jax.device_get(apply(images[i:i + batch_size]))
            for i in range(0, len(images), batch_size)]
    return tuple(np.concatenate(parts) for parts in zip(*outs))
  return run


def shifted_accuracy(trained: evaluate.Trained, images: np.ndarray,
                     labels: np.ndarray, shifts: Sequence[int]
                     ) -> dict[str, list[float]]:
  """{direction: accuracy at each shift}, on images shifted that far."""
  chex.assert_rank(images, 4)
  chex.assert_equal_shape_prefix((images, labels), 1)
  outputs = _model_outputs(trained)
  result = {}
  for name, (dy, dx) in DIRECTIONS.items():
    result[name] = [
        float((outputs(shift(images, dy * d, dx * d))[0].argmax(-1)
               == labels).mean()) for d in shifts]
  return result


def feature_change(trained: evaluate.Trained, images: np.ndarray,
                   shifts: Sequence[int]) -> dict[str, list[float]]:
  """{direction: mean of |f(shifted x) - f(x)| / |f(x)| at each shift}.

  Relative, so models whose features differ in scale compare; images whose
  features are all zero are left out of the mean.
  """
  outputs = _model_outputs(trained)
  base = outputs(images)[1]
  size = np.linalg.norm(base, axis=1)
  keep = size > 0
  result = {}
  for name, (dy, dx) in DIRECTIONS.items():
    result[name] = []
    for d in shifts:
      moved = outputs(shift(images, dy * d, dx * d))[1]
      change = np.linalg.norm(moved - base, axis=1)
      result[name].append(float((change[keep] / size[keep]).mean()))
  return result
