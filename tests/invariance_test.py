"""The translation probe: shifts with zero fill, accuracy and feature change."""

import numpy as np

from cnn_jax import evaluate
from experiments.claims import invariance


def test_shift_moves_pixels_and_fills_with_zeros():
  images = np.arange(1, 17, dtype=np.uint8).reshape(1, 4, 4, 1)
  down_right = invariance.shift(images, 1, 2)[0, ..., 0]
  np.testing.assert_array_equal(down_right, [[0, 0, 0, 0],
                                             [0, 0, 1, 2],
                                             [0, 0, 5, 6],
                                             [0, 0, 9, 10]])
  up_left = invariance.shift(images, -1, -1)[0, ..., 0]
  np.testing.assert_array_equal(up_left[:3, :3], images[0, 1:, 1:, 0])
  assert not up_left[3].any() and not up_left[:, 3].any()
  np.testing.assert_array_equal(invariance.shift(images, 0, 0), images)
  assert not invariance.shift(images, 4, 0).any()


def test_the_probe_measures_the_run_it_reads(trained_run):
  trained = evaluate.load(str(trained_run))
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (20, 28, 28, 1), dtype=np.uint8)
  labels = evaluate.logits(trained, images).argmax(-1)
  acc = invariance.shifted_accuracy(trained, images, labels, (0, 3, 28))
  assert set(acc) == set(invariance.DIRECTIONS)
  # Unshifted, the model agrees with itself; shifted out of the frame, every
  # image is the blank image, so one class for all.
  for values in acc.values():
    assert values[0] == 1.0
    blank_class = evaluate.logits(trained, np.zeros_like(images[:1])).argmax()
    assert values[2] == (labels == blank_class).mean()
  change = invariance.feature_change(trained, images, (0, 1))
  for values in change.values():
    assert values[0] == 0.0 and values[1] > 0.0
