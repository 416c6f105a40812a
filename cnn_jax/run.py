"""One training run's folder: checkpoints, best weights, metrics and summary.

`train.train_seeds` may train several runs in one program; each `Run` keeps
what belongs to its run alone and resumes it from its own folder:

  workdir/config.json           the config of the latest invocation
  workdir/checkpoints/<epoch>/  orbax: state, best (weights), meta (JSON,
                                with a checksum of each item, checked when
                                read); written when `CheckpointClock` says
                                so, and at a run's last epoch
  workdir/metrics.jsonl         one record per finished epoch
  workdir/summary.json          written once the run is finished ("status":
                                "ok") or has diverged ("status": "diverged")
  workdir/events.out.tfevents.* TensorBoard events (`monitor.Events`)

A workdir remembers its config: a rerun whose config differs in what is
trained is refused (`check_resumable`) unless it starts over (`clear`).

Every process opens the run and takes part in checkpointing (orbax writes
each file once); only the main process writes metrics.jsonl, summary.json
and events.
"""

import contextlib
import copy
import errno
import glob
import hashlib
import json
import logging as std_logging
import math
import os
import re
import shutil
import sys
import time
from typing import Any, Iterator

from absl import logging
import jax
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from cnn_jax import errors
from cnn_jax import monitor
from cnn_jax import parallel
from cnn_jax import records
from cnn_jax import validation

CHECKPOINTS = 'checkpoints'
EVENT_FILES = 'events.out.tfevents.*'
# What a run may change when resumed: how it is evaluated, stored, compiled
# and run over devices, and where the data come from; not what is trained.
# (num_epochs may grow under a constant schedule: `config_changes`.)
MAY_CHANGE_ON_RESUME = frozenset((
    'eval_batch_size', 'max_checkpoints_to_keep', 'checkpoint_interval_s',
    'target_test_accuracy', 'max_train_loss', 'parallelism', 'epoch_loop',
    'model.layers', 'data.data_dir', 'data.manual_dir', 'data.cache'))
# Fields added after runs were first started, with the value every run from
# before had: a folder whose config lacks one trained with that value (as do
# runs kept in experiments/).
ADDED_FIELDS = {'model.kernel_init_scale': 1.0, 'model.conv_stride': 1,
                'model.kernel_init_layers': 'all'}
# Fields a folder's config may hold that configs no longer have; none
# changed what was trained, so they are dropped when the folder is read.
REMOVED_FIELDS = ('train_error_marks',)
# A checkpoint's bytes on disk, as (factor, bytes) over its arrays' own:
# orbax's metadata files and the file system's blocks, with a margin.
_CHECKPOINT_OVERHEAD = (1.0, 128 * 1024)


def flat(tree: dict[str, Any], prefix: str = '') -> dict[str, Any]:
  """{dotted field: value} of a nested dict, tuples as lists (as JSON
  gives them back)."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(flat(value, f'{prefix}{key}.'))
    else:
      out[prefix + key] = list(value) if isinstance(value, tuple) else value
  return out


def _as_configs_are(config: dict[str, Any]) -> dict[str, Any]:
  """`config` with the ADDED_FIELDS it lacks, at the values it trained with,
  and without REMOVED_FIELDS."""
  for field, value in ADDED_FIELDS.items():
    *parents, leaf = field.split('.')
    node = config
    for part in parents:
      node = node.setdefault(part, {})
    node.setdefault(leaf, value)
  for field in REMOVED_FIELDS:
    config.pop(field, None)
  return config


class NotARunFolder(errors.UserError):
  """A folder that holds something other than a run: a sweep, foreign files."""


def _check_holds_no_other(workdir: str) -> None:
  """Raises NotARunFolder if `workdir` is a sweep folder or holds files a
  run did not write where a run keeps its own: a run must neither mix with
  them nor, starting over, delete them."""
  if os.path.exists(os.path.join(workdir, records.SWEEP_FILE)):
    raise NotARunFolder(f'--workdir: {workdir} is a sweep folder (it holds '
                        f'{records.SWEEP_FILE}); give a run a folder of its '
                        f'own')
  checkpoints = os.path.join(workdir, CHECKPOINTS)
  if os.path.lexists(checkpoints):
    foreign = (['(a file)'] if not os.path.isdir(checkpoints) else
               [n for n in os.listdir(checkpoints) if not n.isdigit()
                and 'orbax-checkpoint-tmp' not in n])
    if foreign:
      raise NotARunFolder(f'--workdir: {checkpoints} holds what no run '
                          f'wrote ({", ".join(sorted(foreign)[:3])}); '
                          f'choose another --workdir')


def started_config(workdir: str) -> dict[str, Any] | None:
  """The config a run folder was last run with; None for a new folder.

  Runs from before config.json existed kept theirs in summary.json only;
  runs from before a field existed get its ADDED_FIELDS value, so that
  they resume and their weights load into today's model; fields configs no
  longer have are dropped. A folder that holds a sweep or another
  program's files is refused (NotARunFolder).
  """
  _check_holds_no_other(workdir)
  for name in (records.CONFIG_FILE, records.SUMMARY_FILE):
    path = os.path.join(workdir, name)
    if os.path.lexists(path):
      try:
        with open(path) as f:
          config = json.load(f)
        if name == records.SUMMARY_FILE:
          config = config['config']
        if not isinstance(config, dict):
          raise ValueError(config)
      except (OSError, ValueError, KeyError, TypeError):
        raise validation.ConfigError(
            f'{path} is unreadable; pass --start_over to train this run '
            f'again') from None
      if not all(isinstance(config.get(k), dict) for k in ('model', 'data')):
        raise NotARunFolder(f'--workdir: {path} is no config a run wrote '
                            f'(it lacks model and data); choose another '
                            f'--workdir')
      return _as_configs_are(config)
  return None


def config_changes(started: dict[str, Any],
                   config: ml_collections.ConfigDict) -> list[str]:
  """The fields of `config` that differ from `started` in what is trained.

  `num_epochs` may grow when the learning rate is constant: the resumed run
  then continues exactly as a longer run would. A cosine schedule spans
  num_epochs, so there a new value would train something else.
  """
  old, new = flat(started), flat(config.to_dict())
  changes = []
  for field in sorted(set(old) | set(new)):
    a, b = old.get(field), new.get(field)
    if a == b or field in MAY_CHANGE_ON_RESUME:
      continue
    if (field == 'num_epochs' and b > a
        and old.get('lr_schedule') == new.get('lr_schedule') == 'constant'):
      continue
    changes.append(f'{field} ({validation.shown(a)} there, '
                   f'{validation.shown(b)} now)')
  return changes


def check_resumable(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError if `workdir` holds a run of another config."""
  started = started_config(workdir)
  changes = config_changes(started, config) if started else []
  if changes:
    raise validation.ConfigError(
        f'{workdir} holds a run of another config: {", ".join(changes)}; '
        f'rerun with its values, or pass --start_over to discard it and '
        f'train again')


def clear(workdir: str) -> None:
  """Removes a run's files from `workdir`, for a run that starts over;
  refuses (NotARunFolder) a folder whose files a run did not write."""
  _check_holds_no_other(workdir)
  path = os.path.join(workdir, records.CONFIG_FILE)
  if os.path.isfile(path):
    try:
      with open(path) as f:
        config = json.load(f)
    except (OSError, ValueError):
      config = None  # A run's own, damaged: starting over replaces it.
    if isinstance(config, dict) and not all(
        isinstance(config.get(k), dict) for k in ('model', 'data')):
      raise NotARunFolder(f'--workdir: {path} is no config a run wrote; '
                          f'choose another --workdir')
  for name in (records.CONFIG_FILE, records.METRICS_FILE,
               records.SUMMARY_FILE, records.FAILED_FILE):
    path = os.path.join(workdir, name)
    if os.path.exists(path):
      os.remove(path)
  for path in glob.glob(os.path.join(workdir, EVENT_FILES)):
    os.remove(path)
  shutil.rmtree(os.path.join(workdir, CHECKPOINTS), ignore_errors=True)


def read_summary(workdir: str) -> dict[str, Any] | None:
  """A run's summary.json; None before the run has finished or diverged.

  Raises RunFolderError for a file that is not a JSON object.
  """
  path = os.path.join(workdir, records.SUMMARY_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      summary = json.load(f)
  except (OSError, ValueError) as e:
    summary = e
  if not isinstance(summary, dict):
    raise RunFolderError(
        f'{path} is unreadable; delete it and rerun the training command, '
        f"which writes it again from the run's last checkpoint")
  return summary


class RunFolderError(errors.UserError):
  """A folder that holds no run to use: none at all, no checkpoint, or an
  unreadable file."""


class CheckpointError(RunFolderError):
  """A checkpoint whose files do not read back as they were saved."""


class WriteError(errors.UserError):
  """A run's checkpoint or file that cannot be written: a full disk, a
  read-only folder."""


# What `restore_variables` can restore, from the newest checkpoint: the
# weights of the best validation epoch up to it, or those of its epoch.
CHECKPOINT_CHOICES = ('best', 'latest')


def restore_variables(workdir: str, checkpoint: str = 'best'
                      ) -> tuple[ml_collections.ConfigDict, dict[str, Any],
                                 int]:
  """A run folder's config and the weights of its newest checkpoint.

  Restored as saved, without a template, so that no optimizer needs to be
  built to read the weights.

  Args:
    workdir: a run's folder.
    checkpoint: 'best', the weights of the best validation epoch up to the
      newest checkpoint (of a finished run, those summary.json's test
      accuracy is of), or 'latest', that checkpoint's epoch's. A finished
      run's newest checkpoint is its last epoch's.

  Returns:
    The run's config, {'params', 'batch_stats'} as NumPy arrays, and the
    epoch those weights are from.

  Raises:
    RunFolderError: no run or no checkpoint in `workdir`.
    CheckpointError: the newest checkpoint does not read back as saved.
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  started = started_config(workdir)
  if started is None:
    raise RunFolderError(f'--workdir: {workdir} holds no run '
                         f'({records.CONFIG_FILE} is missing); give the '
                         f'folder a training run wrote')
  folder = os.path.join(workdir, CHECKPOINTS)
  manager = ocp.CheckpointManager(folder) if os.path.isdir(folder) else None
  step = manager and manager.latest_step()
  if step is None:
    summary = read_summary(workdir)
    if summary and summary.get('status') == 'diverged':
      why = str(summary.get('reason', '')).split(': ', 1)[-1]
      raise RunFolderError(
          f'--workdir: {workdir} holds a run that diverged at epoch '
          f'{summary.get("diverged_epoch")} ({why}) before it wrote a '
          f'checkpoint: there are no weights to load; train it again with '
          f'other settings and --start_over')
    raise RunFolderError(f'--workdir: {workdir} holds no checkpoint yet; '
                         f'a run writes one once config.checkpoint_interval_s '
                         f'have passed, and at its end')
  item = 'best' if checkpoint == 'best' else 'state'
  _quiet_closed_loops()
  try:
    restored = _read_checkpoint(manager, step, {item: None})
    epoch = restored['meta']['best_val_epoch'] if item == 'best' else step
    if not isinstance(epoch, int) or not 0 <= epoch <= step:
      raise _Damaged(f'its meta item gives no best epoch up to {step}')
  except _Damaged as e:
    raise CheckpointError(
        f'--workdir: checkpoint {folder}/{step} cannot be read ({e}); '
        f'{_remedies(manager, step, item)}') from None
  finally:
    manager.close()
  weights = restored[item]
  variables = {'params': weights['params'],
               'batch_stats': weights.get('batch_stats') or {}}
  return ml_collections.ConfigDict(started), variables, epoch


def _remedies(manager: ocp.CheckpointManager, step: int, item: str) -> str:
  """What `restore_variables` can do instead: the other weights of the same
  checkpoint where they read back as saved, the checkpoint before it, or
  training again."""
  out = []
  other, flag, which = (('state', 'latest', "its last epoch's")
                        if item == 'best' else
                        ('best', 'best', "its best epoch's"))
  try:
    _read_checkpoint(manager, step, {other: None})
    out.append(f'--checkpoint={flag} reads {which} weights, which are '
               f'intact')
  except _Damaged:
    pass
  earlier = [s for s in manager.all_steps() if s < step]
  if earlier:
    out.append(f"delete that folder to use epoch {max(earlier)}'s "
               f'checkpoint')
  return ', or '.join(out + ['train the run again with --start_over'])


class _Damaged(Exception):
  """A checkpoint item that does not read back as saved; says how."""


def _read_checkpoint(manager: ocp.CheckpointManager, step: int,
                     items: dict[str, Any]) -> dict[str, Any]:
  """Checkpoint `step`'s meta and `items`, checked against the checksums
  saved with them (`_digest`).

  Args:
    manager: the run's checkpoints.
    step: the checkpoint, by its epoch.
    items: {'state' or 'best': the tree to restore into, None to restore
      as saved}.

  Returns:
    {'meta': its JSON, without the checksums, and each of `items`}.

  Raises:
    _Damaged: an item is missing, unreadable, or not what was saved.
  """
  path = os.path.join(manager.directory, str(step))
  restored = {}
  for name, template in {'meta': None, **items}.items():
    if not os.path.isdir(os.path.join(path, name)):
      raise _Damaged(f'its {name} item is missing')
    args = (ocp.args.JsonRestore() if name == 'meta'
            else ocp.args.StandardRestore(template))
    try:
      restored[name] = manager.restore(
          step, args=ocp.args.Composite(**{name: args}))[name]
    except (OSError, ValueError, KeyError, TypeError) as e:
      # What orbax and TensorStore raise for a damaged file: a missing or
      # undecodable array, JSON or metadata file.
      raise _Damaged(f'its {name} item is damaged: {_cause(e)}') from None
  meta = restored['meta']
  if not isinstance(meta, dict) or meta.get('epoch') != step:
    raise _Damaged(f'its meta item does not describe epoch {step}')
  digests = meta.pop('digests', None)  # None before checksums were saved.
  if digests is not None and not isinstance(digests, dict) or (
      digests and 'meta' in digests
      and _json_digest(meta) != digests['meta']):
    raise _Damaged('its meta item differs from what was saved (checksum)')
  for name in items:
    if digests and _digest(restored[name]) != digests.get(name):
      raise _Damaged(f'its {name} arrays differ from those saved (checksum)')
  return restored


def _json_digest(obj: Any) -> str:
  """A checksum of a JSON value, the same after a round trip through JSON."""
  return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _digest(tree: Any) -> str:
  """A checksum of a pytree's arrays by path, the same before saving and
  after restoring, with or without a template.

  orbax stores arrays with no checksum of their own: a flipped byte in a
  weight file reads back as a wrong weight, without an error.
  """
  h = hashlib.sha256()
  leaves = [(jax.tree_util.keystr(path, simple=True, separator='/'), leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]
  for path, leaf in sorted(leaves, key=lambda pair: pair[0]):
    array = np.asarray(leaf)
    if array.ndim == 0:
      # A scalar may come back as a Python number (a template's step).
      h.update(f'{path}={array.item()!r};'.encode())
    else:
      h.update(f'{path}:{array.dtype.str}{array.shape};'.encode())
      h.update(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
  return h.hexdigest()


def _cause(e: BaseException) -> str:
  """An exception's first line; of a TensorStore status (`DATA_LOSS: Error
  reading "x" in ...: Error decoding ...: what failed`), what follows its
  last `Error ...:` clause, which names no paths."""
  line = (str(e).strip().splitlines() or [type(e).__name__])[0]
  if not re.match(r'[A-Z_]+: ', line):
    return line
  # Its details ([tensorstore_spec='...']) follow the message.
  clauses = re.sub(r" \[\w+='.*$", '', line).split(': ')
  last = max(i for i, c in enumerate(clauses)
             if i == 0 or c.startswith('Error '))
  return ': '.join(clauses[last + 1:]) or line


def _write_failure(e: BaseException | None) -> str | None:
  """Why a write failed, if `e` (or an exception it came from) is the
  system refusing one: a full disk, a file too large, a read-only folder.

  TensorStore, which writes orbax's arrays, raises ValueError with the
  system's error number in the text.
  """
  seen = 0
  while e is not None and seen < 8:
    if isinstance(e, OSError) and e.errno:
      return e.strerror or os.strerror(e.errno)
    code = re.search(r"os_error_code='?(\d+)", str(e))
    if isinstance(e, ValueError) and code:
      return os.strerror(int(code.group(1)))
    e, seen = e.__cause__ or e.__context__, seen + 1
  return None


class _QuietWriteFailures(std_logging.Filter):
  """Drops orbax's log records of a failed checkpoint write, a traceback
  each from several threads: `Run` reports the failure once, as one line,
  where it surfaces."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    if not (record.exc_info and '/orbax/' in record.pathname):
      return True
    error = record.exc_info[1]
    # A writer still at work when the failed save's partial folder is
    # removed finds its files gone: part of the same failure.
    discarded = ('NOT_FOUND' in str(error)
                 and 'orbax-checkpoint-tmp' in str(error))
    return not (discarded or _write_failure(error) is not None)


_QUIET_WRITE_FAILURES = _QuietWriteFailures()


def _quiet_closed_loops() -> None:
  """Keeps TensorStore's late callbacks of a failed checkpoint off stderr.

  When one array of an orbax save or restore fails, orbax closes the event
  loop that awaited them all; each array still in flight then reports
  'Event loop is closed' as an unraisable exception, a traceback each,
  beside the failure itself, which is raised and reported as one line.
  """
  hook = sys.unraisablehook
  if getattr(hook, 'drops_closed_loops', False):
    return

  def unraisable(args: Any) -> None:
    if not (isinstance(args.exc_value, RuntimeError)
            and str(args.exc_value) == 'Event loop is closed'):
      hook(args)

  unraisable.drops_closed_loops = True
  sys.unraisablehook = unraisable


def _remove_partial_checkpoints(folder: str) -> None:
  """Removes the temporary folders a failed save left; tries again while a
  writer thread still finishing its last file recreates what was removed."""
  for _ in range(50):
    partial = glob.glob(os.path.join(folder, '*.orbax-checkpoint-tmp*'))
    if not partial:
      return
    for tmp in partial:
      shutil.rmtree(tmp, ignore_errors=True)
    time.sleep(0.05)


class CheckpointClock:
  """When the runs trained together write their checkpoints: at the end of
  an epoch once `config.checkpoint_interval_s` seconds have passed since
  they last did, all at the same epochs (runs in one program must resume
  from one epoch), as the main process's clock says.
  """

  def __init__(self, interval_s: float):
    self._interval_s = interval_s
    self._last = time.monotonic()

  def due(self) -> bool:
    due = parallel.agree(time.monotonic() - self._last >= self._interval_s)
    if due:
      self._last = time.monotonic()
    return due


def _fresh_meta(target: float) -> dict[str, Any]:
  return {'epoch': 0, 'best_val_accuracy': -1.0, 'best_val_epoch': 0,
          'wall_time_s': 0.0, 'steady_images_per_sec': [],
          'first_images_per_sec': [], 'target': target,
          'target_epoch': None, 'time_to_target_s': None}


class Run:
  """A run's files and progress: restored from its newest checkpoint when
  opened, written as each epoch ends (checkpoints when `CheckpointClock`
  says, and at the run's end).

  Attributes:
    config: the run's config (its own seed).
    state: the host TrainState to train from (fresh or restored).
    best: host {'params', 'batch_stats'} of the best validation epoch so far.
    meta: epoch, best validation accuracy and epoch, wall time, target.
    history: the metrics.jsonl records up to `meta['epoch']`.
  """

  def __init__(self, workdir: str, config: ml_collections.ConfigDict,
               fresh_state: Any, *, steps_per_epoch: int,
               learning_rate: optax.Schedule, label: str = ''):
    self.workdir = os.path.abspath(workdir)
    self.config = config
    self._label = label
    self._writes = parallel.is_main_process()
    logging.get_absl_logger().addFilter(_QUIET_WRITE_FAILURES)
    _quiet_closed_loops()
    with self._writing(records.CONFIG_FILE):
      os.makedirs(self.workdir, exist_ok=True)
      if self._writes:
        records.write_json(os.path.join(self.workdir, records.CONFIG_FILE),
                           config.to_dict())
    # A save cut short (a kill, a full disk) leaves a temporary folder,
    # which no restore reads: removed here.
    self._manager = ocp.CheckpointManager(
        os.path.join(self.workdir, CHECKPOINTS),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=config.max_checkpoints_to_keep, create=True,
            cleanup_tmp_directories=True))
    self.state = fresh_state
    self.best = _variables(fresh_state)
    self.meta = _fresh_meta(config.target_test_accuracy)
    if self._manager.latest_step() is not None:
      self._restore()
    # Wall time spent by earlier, interrupted invocations of this run.
    self._earlier_wall_time = self.meta['wall_time_s']
    # This invocation's first epoch includes compiling the program.
    self._first_epoch = True
    # The last epoch's (state, best, meta) while its checkpoint is unwritten.
    self._unsaved = None
    # The epoch whose checkpoint orbax may still be writing.
    self._saving = None
    path = os.path.join(self.workdir, records.METRICS_FILE)
    # Lines written after the checkpoint being resumed are dropped.
    self.history = [r for r in records.read_json_lines(path)
                    if r['epoch'] <= self.epoch]
    with self._writing(records.METRICS_FILE):
      if self._writes:
        records.write_json_lines(path, self.history)
    with self._writing():
      self._events = monitor.Events(
          self.workdir, config, steps_per_epoch=steps_per_epoch,
          learning_rate=learning_rate, epoch=self.epoch, writes=self._writes)

  def _restore(self) -> None:
    """Resumes from the newest checkpoint; raises CheckpointError, saying
    what to do, where it does not read back as saved."""
    step = self._manager.latest_step()
    try:
      restored = _read_checkpoint(self._manager, step,
                                  {'state': self.state, 'best': self.best})
    except _Damaged as e:
      self._manager.close()
      earlier = [s for s in self._manager.all_steps() if s < step]
      remedy = (f"delete that folder to resume from epoch {max(earlier)}'s "
                f'checkpoint, or pass' if earlier else 'pass')
      raise CheckpointError(
          f'checkpoint {self._manager.directory}/{step} cannot be read '
          f'({e}); {remedy} --start_over to train this run again') from None
    self.state, self.best = restored['state'], restored['best']
    target = self.meta['target']
    self.meta.update(restored['meta'])
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

  def end_epoch(self, state: Any, record: dict[str, Any], elapsed: float,
                steps: dict[str, np.ndarray], *,
                checkpoint: bool = True) -> None:
    """Keeps the best weights, appends `record`, and writes a checkpoint if
    `checkpoint`; otherwise `finish` or `diverge` writes this epoch's.

    Args:
      state: the host TrainState after the epoch.
      record: the epoch's metrics.jsonl line.
      elapsed: seconds this invocation has run so far.
      steps: each step's training metrics, [steps] per metric (events).
      checkpoint: whether to write the checkpoint now (`CheckpointClock`).
    """
    meta, epoch = self.meta, record['epoch']
    if record['val_accuracy'] > meta['best_val_accuracy']:
      self.best = _variables(state)
      meta.update(best_val_accuracy=record['val_accuracy'],
                  best_val_epoch=epoch)
    # Only epochs that compiled nothing measure the steady state.
    key = 'first_images_per_sec' if self._first_epoch else (
        'steady_images_per_sec')
    meta[key].append(record['images_per_sec'])
    self._first_epoch = False
    meta.update(epoch=epoch, wall_time_s=self._earlier_wall_time + elapsed)
    test_accuracy = record.get('test_accuracy')
    if (test_accuracy is not None and not self.reached_target
        and test_accuracy >= meta['target']):
      meta.update(target_epoch=epoch, time_to_target_s=meta['wall_time_s'])
    self.history.append(record)
    with self._writing(records.METRICS_FILE):
      if self._writes:
        records.write_json_lines(
            os.path.join(self.workdir, records.METRICS_FILE), self.history)
    with self._writing():
      self._events.write_epoch(epoch, steps, record)
    # state and best are host copies made for this epoch, and meta changes
    # in place: kept until written, all three stay as at this epoch.
    self._unsaved = (state, self.best, copy.deepcopy(meta))
    if checkpoint:
      self._save_unsaved()
    logging.info(
        'epoch %d/%d%s  train_loss %.4f  train_acc %.4f  val_acc %.4f%s  '
        '%.0f img/s  %.1fs  ETA %.0fs', epoch, self.config.num_epochs,
        self._label, record['train_loss'], record['train_accuracy'],
        record['val_accuracy'],
        '' if test_accuracy is None else f'  test_acc {test_accuracy:.4f}',
        record['images_per_sec'], record['epoch_time_s'],
        record['epoch_time_s'] * (self.config.num_epochs - epoch))

  def _save_unsaved(self) -> None:
    """Writes the last finished epoch's checkpoint, if not yet written.

    orbax writes it in the background while training goes on; a failure
    surfaces at the next save or when the run ends (`_wait_for_saves`).
    Raises WriteError, naming the folder, where there is no room for it.
    """
    if not self._unsaved:
      return
    state, best, meta = self._unsaved
    self._wait_for_saves()
    with self._checkpoint_writes(meta['epoch']):
      self._check_room(state, best)
      meta = dict(meta, digests={'state': _digest(state),
                                 'best': _digest(best),
                                 'meta': _json_digest(meta)})
      self._manager.save(meta['epoch'], args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          best=ocp.args.StandardSave(best), meta=ocp.args.JsonSave(meta)))
    self._saving = meta['epoch']
    self._unsaved = None

  def _wait_for_saves(self) -> None:
    """Waits for the checkpoint being written; raises WriteError if it
    failed."""
    with self._checkpoint_writes(self._saving):
      self._manager.wait_until_finished()
    self._saving = None

  def _check_room(self, state: Any, best: Any) -> None:
    """Raises WriteError before a checkpoint that the disk has no room for
    is begun: a write that fails midway leaves TensorStore's callbacks
    printing tracebacks of their own."""
    arrays = sum(np.asarray(x).nbytes for x in jax.tree.leaves((state, best)))
    scale, extra = _CHECKPOINT_OVERHEAD
    needed = arrays * scale + extra
    free = shutil.disk_usage(self._manager.directory).free
    if parallel.agree(free < needed):
      raise OSError(errno.ENOSPC, f'{os.strerror(errno.ENOSPC)}: '
                    f'{free / 2**20:.1f} MiB free, the checkpoint needs about '
                    f'{needed / 2**20:.1f} MiB')

  @contextlib.contextmanager
  def _checkpoint_writes(self, epoch: int | None) -> Iterator[None]:
    """Turns the system's refusal to write epoch `epoch`'s checkpoint into
    one WriteError; removes what the failed save left."""
    try:
      yield
    except (OSError, ValueError) as e:
      cause = _write_failure(e)
      if cause is None:
        raise
      folder = str(self._manager.directory)
      try:
        self._manager.close()
      except (OSError, ValueError):
        pass  # The same failure again.
      if self._writes:
        _remove_partial_checkpoints(folder)
      steps = [int(n) for n in os.listdir(folder) if n.isdigit()
               ] if os.path.isdir(folder) else []
      start = f"epoch {max(steps)}'s checkpoint" if steps else 'the start'
      raise WriteError(
          f'cannot write the checkpoint of epoch {epoch} in {folder} '
          f'({cause}); free space or fix the folder, then rerun the same '
          f'command: the run resumes from {start}') from None

  @contextlib.contextmanager
  def _writing(self, name: str | None = None) -> Iterator[None]:
    """Turns the system's refusal to write the run's file `name` (None: the
    file the error names) into one WriteError naming it."""
    try:
      yield
    except OSError as e:
      path = (os.path.join(self.workdir, name) if name
              else e.filename or self.workdir)
      raise WriteError(f'cannot write {path} ({e.strerror or e}); free '
                       f'space or fix the folder, then rerun the same '
                       f'command') from None

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
    self._save_unsaved()
    self._wait_for_saves()
    self._manager.close()
    with self._writing():
      self._events.write_test(self.epoch, test)
      self._events.close()
    meta = self.meta
    # Epochs that included compilation count only when no other epoch ran.
    steady = meta['steady_images_per_sec'] or meta['first_images_per_sec']
    summary = {
        'status': 'ok',
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
    self._write_summary(summary)
    logging.info('test_accuracy %.4f (epoch %d by validation)%s',
                 test['accuracy'], meta['best_val_epoch'], self._label)
    return summary

  def diverge(self, epoch: int, train_loss: float, elapsed: float,
              **facts: Any) -> dict[str, Any]:
    """Ends a run whose loss blew up: summary.json says so, with no accuracy.

    The epoch's state is not saved, and the last good epoch's is written if
    it was not yet, so the last checkpoint is the last good epoch; a rerun
    finds the summary and does not train again.
    """
    self._save_unsaved()
    self._wait_for_saves()
    self._manager.close()
    with self._writing():
      self._events.close()
    limit = self.config.max_train_loss
    why = (f'train loss {train_loss:.4g} is not finite'
           if not math.isfinite(train_loss) else
           f'train loss {train_loss:.4g} > config.max_train_loss {limit:g}')
    summary = {
        'status': 'diverged',
        'diverged_epoch': epoch,
        'diverged_train_loss': train_loss if math.isfinite(train_loss)
                               else str(train_loss),
        'reason': f'diverged at epoch {epoch}: {why}',
        'epochs_completed': self.epoch,
        'wall_time_s': self._earlier_wall_time + elapsed,
        **facts,
        'config': self.config.to_dict(),
        'versions': records.versions(),
        'git_commit': records.git_commit(),
    }
    self._write_summary(summary)
    logging.error('%s%s; last good checkpoint: epoch %d', summary['reason'],
                  self._label, self.epoch)
    return summary

  def _write_summary(self, summary: dict[str, Any]) -> None:
    with self._writing(records.SUMMARY_FILE):
      if self._writes:
        records.write_json(os.path.join(self.workdir, records.SUMMARY_FILE),
                           summary)


def _variables(state: Any) -> dict[str, Any]:
  return {'params': state.params, 'batch_stats': state.batch_stats}
