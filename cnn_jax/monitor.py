"""TensorBoard events and progress: what a user watches while a run trains.

Each run writes TensorBoard event files into its own folder through
TensorBoard's own record writer (`tensorboard --logdir=DIR`; given a sweep
folder, TensorBoard shows every point as a run): the loss, accuracy and
learning rate of every step, each epoch's metrics.jsonl record, the test
result, and the flattened config as hyperparameters. Only the main process
writes them.

Progress bars (tqdm) appear only on a terminal; elsewhere, as in CI logs and
tests, the console keeps its one line per epoch.
"""

import contextlib
import itertools
import os
import socket
import sys
import time
from typing import Any, Callable, Iterable, Iterator, TypeVar

from absl import logging
from flax import traverse_util
import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.hparams import api_pb2 as hparams_api_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.summary.writer import record_writer
import tqdm
from tqdm import contrib as tqdm_contrib

from cnn_jax import input_pipeline
from cnn_jax import models
from cnn_jax import parallel

T = TypeVar('T')

# The metrics the HParams dashboard puts beside each run's hyperparameters.
HPARAM_METRICS = ('epoch/val_accuracy', 'epoch/train_loss', 'test/accuracy')

_FILE_COUNT = itertools.count()


def hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as flat TensorBoard hyperparameters: 'model.pooling': 'max'."""
  flat = traverse_util.flatten_dict(config.to_dict(), sep='.')
  # HParams take numbers, strings and booleans; a tuple is shown as text.
  return {k: v if isinstance(v, (bool, int, float, str)) else str(v)
          for k, v in flat.items() if v is not None}


class Events:
  """One run's TensorBoard event file.

  Steps are counted over the whole run: step i (from 0) of epoch e is global
  step (e - 1) * steps_per_epoch + i + 1, and an epoch's own metrics sit at
  its last step, so per-step and per-epoch curves share one axis.

  One event per step holds that step's loss, accuracy and learning rate,
  written as it is made, and writing an epoch ends with a flush, so a
  checkpoint never holds an epoch whose events a kill could lose. The
  records and protos are TensorBoard's own, without TensorFlow: its
  `EventFileWriter` imports TensorFlow wherever that is installed, and
  tensorboardX's package imports PyTorch, each seconds of every process's
  start-up.
  """

  def __init__(self, workdir: str, config: ml_collections.ConfigDict, *,
               steps_per_epoch: int, learning_rate: optax.Schedule,
               epoch: int, writes: bool):
    """Opens a new event file in `workdir`.

    Args:
      workdir: the run's folder.
      config: the run's config; written as hyperparameters by a fresh run.
      steps_per_epoch: training steps in one epoch.
      learning_rate: the schedule, step -> learning rate (from step 0).
      epoch: the epoch of the checkpoint the run resumes from; 0 for a
        fresh run, or one interrupted before its first checkpoint. Every
        invocation hides what earlier ones wrote after that epoch (a
        SessionLog START at the first step it trains, which TensorBoard
        reads as "purge the steps from here"), as metrics.jsonl drops those
        lines.
      writes: False outside the main process: nothing is written.
    """
    self._steps = steps_per_epoch
    self._learning_rate = learning_rate
    self._file = None
    if writes:
      # TensorBoard's naming; the process id and a count keep two
      # invocations (or two in one process) from sharing a file.
      self._file = record_writer.RecordWriter(open(os.path.join(
          workdir, f'events.out.tfevents.{int(time.time()):010d}.'
          f'{socket.gethostname()}.{os.getpid()}.{next(_FILE_COUNT)}'),
          'wb'))
      self._write(event_pb2.Event(file_version='brain.Event:2'))
    if not epoch:  # At step 0, which no purge reaches.
      for proto in _hparams_summaries(hparams(config)):
        self._write(event_pb2.Event(summary=proto))
    self._write(event_pb2.Event(
        step=epoch * steps_per_epoch + 1,
        session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
    self._flush()

  def _write(self, event: event_pb2.Event) -> None:
    if self._file:
      event.wall_time = time.time()
      self._file.write(event.SerializeToString())

  def _scalars(self, step: int, values: dict[str, float]) -> None:
    self._write(event_pb2.Event(step=step, summary=summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)
               for tag, value in values.items()])))

  def _flush(self) -> None:
    if self._file:
      self._file.flush()

  def write_epoch(self, epoch: int, steps: dict[str, np.ndarray],
                  record: dict[str, Any]) -> None:
    """Writes every step of an epoch and the epoch's record, to disk.

    Args:
      epoch: the epoch, from 1.
      steps: {'loss', 'accuracy'}, one value per step of the epoch.
      record: the epoch's metrics.jsonl line.
    """
    first = (epoch - 1) * self._steps + 1
    global_steps = np.arange(first, first + self._steps)
    # The rate that step used: the schedule counts optimizer updates from 0.
    # (A constant schedule returns one value for any number of steps.)
    columns = {f'train/{name}': np.asarray(values, np.float64).tolist()
               for name, values in steps.items()}
    # NumPy steps: a jax array made here would be one more operation
    # compiled on its own (train.py jits the schedule for the same reason).
    columns['train/learning_rate'] = np.broadcast_to(
        self._learning_rate(global_steps - 1), global_steps.shape).tolist()
    for i, step in enumerate(global_steps.tolist()):
      self._scalars(step, {tag: column[i] for tag, column in columns.items()})
    self._scalars(int(global_steps[-1]), {
        f'epoch/{name}': value for name, value in record.items()
        if name != 'epoch'})
    self._flush()

  def write_test(self, epoch: int, test: dict[str, float]) -> None:
    """The test result of the selected weights, at the run's last step."""
    self._scalars(epoch * self._steps,
                  {f'test/{name}': value for name, value in test.items()})
    self._flush()

  def close(self) -> None:
    if self._file:
      self._file.close()
      self._file = None


def _hparams_summaries(values: dict[str, Any]) -> list[summary_pb2.Summary]:
  """The HParams dashboard's experiment (hyperparameters and metrics by
  name and type, no domains: a sweep's runs each write one) and this run's
  values."""
  api = hparams_api_pb2
  types = {bool: api.DATA_TYPE_BOOL, str: api.DATA_TYPE_STRING}
  experiment = api.Experiment(
      hparam_infos=[
          api.HParamInfo(name=name, type=types.get(type(value),
                                                   api.DATA_TYPE_FLOAT64))
          for name, value in values.items()],
      metric_infos=[api.MetricInfo(name=api.MetricName(tag=tag))
                    for tag in HPARAM_METRICS])
  content = plugin_data_pb2.HParamsPluginData(experiment=experiment)
  return [
      summary_pb2.Summary(value=[summary_pb2.Summary.Value(
          tag=hparams_metadata.EXPERIMENT_TAG,
          metadata=hparams_metadata.create_summary_metadata(content),
          tensor=hparams_metadata.NULL_TENSOR)]),
      hparams_summary.hparams_pb(values)]


@contextlib.contextmanager
def progress_bar(*, disable: bool | None = None,
                 **kwargs: Any) -> Iterator[tqdm.tqdm]:
  """A tqdm bar on stderr, shown on a terminal in the main process only.

  While it is shown, absl's log lines print above it (tqdm.write) instead of
  through it. Where it is not, `bar.disable` is True and updates cost nothing.

  Args:
    disable: True hides the bar; None, tqdm's default, shows it only if
      stderr is a terminal.
    **kwargs: for tqdm.tqdm (total, desc, unit, leave, ...).
  """
  bar = tqdm.tqdm(file=sys.stderr, dynamic_ncols=True,
                  disable=disable if parallel.is_main_process() else True,
                  **kwargs)
  handler = logging.get_absl_handler().python_handler
  stream = handler.stream
  if not bar.disable:
    handler.setStream(tqdm_contrib.DummyTqdmFile(stream))
  try:
    yield bar
  finally:
    bar.close()
    handler.setStream(stream)


def track(items: Iterable[T], *, size: Callable[[T], int] = lambda _: 1,
          **kwargs: Any) -> Iterator[T]:
  """Yields `items`, advancing a `progress_bar` by size(item) after each."""
  with progress_bar(**kwargs) as bar:
    for item in items:
      yield item
      bar.update(size(item))


@contextlib.contextmanager
def epoch_progress(epoch: int, num_epochs: int, steps: int, *,
                   per_step: bool = True
                   ) -> Iterator[Callable[[Any], None] | None]:
  """A bar over the steps of one epoch, with its ETA, on a terminal.

  Yields what the training loop calls with each step's metrics, or None
  where no bar is shown. The bar counts finished steps: the callback waits
  for the step (the loop's dispatch runs ahead of the device otherwise),
  which costs little against a step's compute. It leaves no line behind:
  the epoch's log line follows it.

  Args:
    epoch: the epoch, from 1.
    num_epochs: the run's last epoch.
    steps: steps in the epoch.
    per_step: False where the epoch reports no steps (one compiled
      program): no bar then, rather than one that stands still.
  """
  with progress_bar(total=steps, desc=f'epoch {epoch}/{num_epochs}',
                    unit='step', leave=False,
                    disable=None if per_step else True) as bar:
    if bar.disable:
      yield None
      return

    def on_step(metrics: Any) -> None:
      jax.block_until_ready(metrics)
      bar.update()
    yield on_step


def model_table(model: nn.Module,
                model_config: ml_collections.ConfigDict) -> str:
  """Each layer's output shape, parameters and FLOPs (flax's tabulate), and
  each layer's output side and receptive field from the config.

  The two tables come from different sources, the traced model and the
  seed's formulas (`models.receptive_fields`), so they check each other: the
  pools' output sides must be the next layer's input sides in the first.
  """
  # NumPy, as tabulate only traces: jnp.zeros would compile two operations
  # of its own.
  x = np.zeros((1,) + input_pipeline.IMAGE_SHAPE, np.float32)
  layers = model.tabulate(
      jax.random.key(0), x, train=False, compute_flops=True,
      console_kwargs={'width': 120, 'force_terminal': False})
  rows = [('layer', 'window', 'stride', 'output', 'receptive field',
           'jump')]
  for g in models.receptive_fields(model_config, x.shape[1]):
    window = '' if g.name == 'input' else f'{g.window}x{g.window}'
    stride = '' if g.name == 'input' else str(g.stride)
    rows.append((g.name, window, stride, f'{g.side}x{g.side}x{g.channels}',
                 f'{g.receptive_field}x{g.receptive_field}', str(g.jump)))
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  geometry = '\n'.join('  '.join(c.ljust(w) for c, w in zip(r, widths))
                       .rstrip() for r in rows)
  return (f'{layers.rstrip()}\n(FLOPs per image; the total counts '
          f"BatchNorm's running statistics as parameters too.)\n\n"
          f'Receptive fields (r_out = r_in + (k - 1) j_in, j_out = j_in s), '
          f'output sides by the seed\'s floor((W - F + 2P) / S) + 1:\n'
          f'{geometry}')
