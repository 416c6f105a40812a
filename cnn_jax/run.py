"""One training run's folder: checkpoints, best weights, metrics and summary.

`train.train_seeds` may train several runs in one program; each `Run` keeps
what belongs to its run alone and resumes it from its own folder:

  workdir/checkpoints/<epoch>/  orbax: state, best (weights), meta (JSON)
  workdir/metrics.jsonl         one record per finished epoch
  workdir/summary.json          written once the run is finished

Every process opens the run and takes part in checkpointing (orbax writes
each file once); only the main process writes metrics.jsonl and summary.json.
"""

import os
from typing import Any

from absl import logging
import ml_collections
import orbax.checkpoint as ocp

from cnn_jax import parallel
from cnn_jax import records

METRICS_FILE = 'metrics.jsonl'
SUMMARY_FILE = 'summary.json'


def _fresh_meta(target: float) -> dict[str, Any]:
  return {'epoch': 0, 'best_val_accuracy': -1.0, 'best_val_epoch': 0,
          'wall_time_s': 0.0, 'images_per_sec': [], 'target': target,
          'target_epoch': None, 'time_to_target_s': None}


class Run:
  """A run's files and progress: restored when opened, saved every epoch.

  Attributes:
    config: the run's config (its own seed).
    state: the host TrainState to train from (fresh or restored).
    best: host {'params', 'batch_stats'} of the best validation epoch so far.
    meta: epoch, best validation accuracy and epoch, wall time, target.
    history: the metrics.jsonl records up to `meta['epoch']`.
  """

  def __init__(self, workdir: str, config: ml_collections.ConfigDict,
               fresh_state: Any, *, label: str = ''):
    self.workdir = os.path.abspath(workdir)
    self.config = config
    self._label = label
    self._writes = parallel.is_main_process()
    os.makedirs(self.workdir, exist_ok=True)
    self._manager = ocp.CheckpointManager(
        os.path.join(self.workdir, 'checkpoints'),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=config.max_checkpoints_to_keep, create=True))
    self.state = fresh_state
    self.best = _variables(fresh_state)
    self.meta = _fresh_meta(config.target_test_accuracy)
    if self._manager.latest_step() is not None:
      self._restore()
    # Wall time spent by earlier, interrupted invocations of this run.
    self._earlier_wall_time = self.meta['wall_time_s']
    path = os.path.join(self.workdir, METRICS_FILE)
    # Lines written after the checkpoint being resumed are dropped.
    self.history = [r for r in records.read_json_lines(path)
                    if r['epoch'] <= self.epoch]
    if self._writes:
      records.write_json_lines(path, self.history)

  def _restore(self) -> None:
    restored = self._manager.restore(
        self._manager.latest_step(), args=ocp.args.Composite(
            state=ocp.args.StandardRestore(self.state),
            best=ocp.args.StandardRestore(self.best),
            meta=ocp.args.JsonRestore()))
    self.state, self.best = restored.state, restored.best
    target = self.meta['target']
    self.meta.update(restored.meta)
    if self.meta['target'] != target:
      # An epoch that reached another target says nothing about this one.
      self.meta.update(target=target, target_epoch=None,
                       time_to_target_s=None)
    logging.info('resumed %s after epoch %d', self.workdir, self.epoch)

  @property
  def epoch(self) -> int:
    """The last finished epoch (0 before the first)."""
    return self.meta['epoch']

  @property
  def reached_target(self) -> bool:
    return self.meta['target_epoch'] is not None

  def end_epoch(self, state: Any, record: dict[str, Any],
                elapsed: float) -> None:
    """Keeps the best weights, appends `record` and writes a checkpoint.

    Args:
      state: the host TrainState after the epoch.
      record: the epoch's metrics.jsonl line.
      elapsed: seconds this invocation has run so far.
    """
    meta, epoch = self.meta, record['epoch']
    if record['val_accuracy'] > meta['best_val_accuracy']:
      self.best = _variables(state)
      meta.update(best_val_accuracy=record['val_accuracy'],
                  best_val_epoch=epoch)
    meta['images_per_sec'].append(record['images_per_sec'])
    meta.update(epoch=epoch, wall_time_s=self._earlier_wall_time + elapsed)
    test_accuracy = record.get('test_accuracy')
    if (test_accuracy is not None and not self.reached_target
        and test_accuracy >= meta['target']):
      meta.update(target_epoch=epoch, time_to_target_s=meta['wall_time_s'])
    self.history.append(record)
    if self._writes:
      records.write_json_lines(os.path.join(self.workdir, METRICS_FILE),
                               self.history)
    self._manager.save(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        best=ocp.args.StandardSave(self.best),
        meta=ocp.args.JsonSave(meta)))
    logging.info(
        'epoch %d/%d%s  train_loss %.4f  train_acc %.4f  val_acc %.4f%s  '
        '%.0f img/s  %.1fs  ETA %.0fs', epoch, self.config.num_epochs,
        self._label, record['train_loss'], record['train_accuracy'],
        record['val_accuracy'],
        '' if test_accuracy is None else f'  test_acc {test_accuracy:.4f}',
        record['images_per_sec'], record['epoch_time_s'],
        record['epoch_time_s'] * (self.config.num_epochs - epoch))

  def finish(self, test: dict[str, float], elapsed: float,
             **facts: Any) -> dict[str, Any]:
    """Writes summary.json: the test result of the best weights, and more.

    Args:
      test: {'accuracy', 'loss'} of `self.best` on the test split.
      elapsed: seconds this invocation has run.
      **facts: about the program that trained the run (devices, params, ...).

    Returns:
      The summary.
    """
    self._manager.wait_until_finished()
    self._manager.close()
    meta = self.meta
    # The first epoch includes compilation; steady state is what the rest show.
    rates = meta['images_per_sec']
    steady = rates[1:] or rates
    summary = {
        'test_accuracy': test['accuracy'],
        'test_loss': test['loss'],
        'best_val_accuracy': meta['best_val_accuracy'],
        'best_val_epoch': meta['best_val_epoch'],
        'final_val_accuracy': self.history[-1]['val_accuracy'],
        'epochs_completed': meta['epoch'],
        'target_epoch': meta['target_epoch'],
        'time_to_target_s': meta['time_to_target_s'],
        'train_images_per_sec': sum(steady) / len(steady),
        'wall_time_s': self._earlier_wall_time + elapsed,
        **facts,
        'config': self.config.to_dict(),
        'versions': records.versions(),
        'git_commit': records.git_commit(),
    }
    if self._writes:
      records.write_json(os.path.join(self.workdir, SUMMARY_FILE), summary)
    logging.info('test_accuracy %.4f (epoch %d by validation)%s',
                 test['accuracy'], meta['best_val_epoch'], self._label)
    return summary


def _variables(state: Any) -> dict[str, Any]:
  return {'params': state.params, 'batch_stats': state.batch_stats}
