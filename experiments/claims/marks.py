"""Training-error marks: the first step at which a run's training error falls
below a level, and the training seconds up to it (claim 1's measure).

Read from what every run writes: each step's training accuracy in its
TensorBoard events, and each epoch's seconds in metrics.jsonl. A resumed run's
events show each step once, as an uninterrupted run's (`cnn_jax.monitor`), so
its marks are the same.
"""

import glob
import os
from typing import Any, Sequence

import numpy as np

from cnn_jax import errors
from cnn_jax import run as run_lib

# A run's training error at a step is the mean error of its last this-many
# training batches (2,000 images at batch 100), as the steps measured it: no
# extra evaluation; short, since ReLU with BatchNorm is below 25% within the
# first 100 steps, and long enough that one batch's luck (a standard
# deviation of about 4 points at batch 100) moves it by about 1 point.
MARK_WINDOW = 20
ACCURACY_TAG = 'train/accuracy'


class MarksError(errors.UserError):
  """A run folder whose training error cannot be read."""


def first_below(recent: Sequence[float], errors: np.ndarray,
                levels: Sequence[float], window: int) -> dict[float, int]:
  """Where the trailing mean of the errors first falls below each level.

  Args:
    recent: the errors of the (up to window - 1) steps before `errors`,
      whose windows were looked at already.
    errors: this epoch's per-step errors.
    levels: the levels to look for.
    window: steps in the trailing mean; no mean before `window` steps.

  Returns:
    {level: index into `errors` of the step whose window first falls below
    it}, for the levels crossed in this epoch.
  """
  seq = np.concatenate([np.asarray(recent, np.float64),
                        np.asarray(errors, np.float64)])
  if len(seq) < window:
    return {}
  sums = np.cumsum(np.concatenate([[0.0], seq]))
  # means[j] is the window that ends at seq[j + window - 1].
  ends = np.arange(window - 1, len(seq)) - len(recent)
  means = (sums[window:] - sums[:-window]) / window
  found = {}
  for level in levels:
    hits = ends[(means < level) & (ends >= 0)]
    if hits.size:
      found[level] = int(hits[0])
  return found


def train_error_marks(accuracy: np.ndarray, epoch_seconds: Sequence[float],
                      levels: Sequence[float], window: int
                      ) -> dict[str, dict[str, Any] | None]:
  """The marks of a run's per-step accuracies, epoch by epoch.

  Each epoch's windows are looked at with the errors of the steps before it
  (`first_below`), as they were while the run trained, so that the means,
  and the marks, are the same to the last bit.

  Args:
    accuracy: [epochs, steps per epoch] training accuracy of each step.
    epoch_seconds: each epoch's training seconds (metrics.jsonl's
      epoch_time_s, evaluation left out).
    levels: training-error levels in (0, 1).
    window: steps in the trailing mean.

  Returns:
    {f'{level:g}': {'step', 'epoch', 'train_time_s'} of the first step
    whose window is below the level, or None if none is}.
  """
  marks, recent, seconds = {}, [], 0.0
  for epoch, (acc, epoch_time) in enumerate(zip(accuracy, epoch_seconds), 1):
    errors = 1.0 - np.asarray(acc, np.float64)
    steps = len(errors)
    todo = [l for l in levels if f'{l:g}' not in marks]
    for level, i in first_below(recent, errors, todo, window).items():
      marks[f'{level:g}'] = {
          'step': (epoch - 1) * steps + i + 1, 'epoch': epoch,
          'train_time_s': seconds + (i + 1) / steps * epoch_time}
    recent = (recent + errors.tolist())[-(window - 1):]
    seconds += epoch_time
  return {f'{l:g}': marks.get(f'{l:g}') for l in levels}


def step_accuracy(folder: str) -> list[tuple[int, float]]:
  """[(global step, training accuracy)] of a run, as TensorBoard shows it:
  what an interrupted invocation wrote after its checkpoint is left out."""
  # Imported here: TensorBoard's reader is needed by this analysis alone.
  # pylint: disable=g-import-not-at-top
  from tensorboard.backend.event_processing import plugin_event_accumulator
  from tensorboard.util import tensor_util
  events = plugin_event_accumulator.EventAccumulator(
      folder, size_guidance={plugin_event_accumulator.TENSORS: 0})
  events.Reload()
  if ACCURACY_TAG not in events.Tags()['tensors']:
    return []
  return sorted((e.step, tensor_util.make_ndarray(e.tensor_proto).item())
                for e in events.Tensors(ACCURACY_TAG))


def read(point: dict[str, Any], levels: Sequence[float],
         steps_per_epoch: int) -> tuple[dict[str, Any], int]:
  """A sweep point's marks at `levels`, and the window they were found with.

  Args:
    point: the point's 'folder', 'summary' and 'history' (metrics.jsonl).
    levels: training-error levels in (0, 1).
    steps_per_epoch: training steps in each of its epochs.

  Returns:
    `train_error_marks`' result, and the window in steps.

  Raises:
    MarksError: the folder has neither events with every epoch's steps nor
      recorded marks at `levels`.
  """
  folder, summary, history = point['folder'], point['summary'], point['history']
  if not glob.glob(os.path.join(folder, run_lib.EVENT_FILES)):
    return _recorded(folder, summary, levels)
  steps = step_accuracy(folder)
  expected = list(range(1, len(history) * steps_per_epoch + 1))
  if [s for s, _ in steps] != expected:
    raise MarksError(
        f'{folder}: its TensorBoard events hold {len(steps)} training steps, '
        f'metrics.jsonl {len(history)} epochs of {steps_per_epoch}; train '
        f'the point again with --start_over')
  accuracy = np.reshape([a for _, a in steps], (len(history), -1))
  seconds = [record['epoch_time_s'] for record in history]
  return train_error_marks(accuracy, seconds, levels, MARK_WINDOW), (
      MARK_WINDOW)


def _recorded(folder: str, summary: dict[str, Any], levels: Sequence[float]
              ) -> tuple[dict[str, Any], int]:
  """The marks a run recorded in its summary.json: experiments/relu_speed's
  runs kept no events, and were written when runs computed their marks."""
  recorded = summary.get('train_error_marks') or {}
  missing = [f'{l:g}' for l in levels if f'{l:g}' not in recorded]
  if missing:
    raise MarksError(
        f'{folder} has no TensorBoard events to read the training error '
        f'from, and its summary.json records no mark at '
        f'{", ".join(missing)}; train the point again with --start_over')
  return ({f'{l:g}': recorded[f'{l:g}'] for l in levels},
          summary['mark_window_steps'])
