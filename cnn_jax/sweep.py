"""Runs every point of a sweep config, each in its own sub-folder.

  python -m cnn_jax.sweep --config=configs/sweeps/activation_pooling.py \
      --workdir=DIR [--config.num_epochs=1 ...] [--dry_run]

`--config.<field>` overrides apply to every point. Run the same command again
after an interruption: finished points (with a summary.json) are skipped and
an interrupted point resumes from its last checkpoint (or, stopped before
its first, trains again with the points not yet started). A rerun whose
points' configs differ from those their folders were started with is
refused, unless `--start_over` is given: then those points train again from
scratch, as do points whose checkpoint cannot be read. A point that diverges
or fails is recorded as such and the sweep goes on. Each point's folder is
named by its values, escaped where they are not safe in a file name, and
always lies inside the sweep folder (`point_folder`); two points that would
share a folder or train the same config are refused. No
training logic lives here: points that share a program (differ only in
`train.PER_RUN_FIELDS`: seed, learning rate, weight decay, label smoothing)
are one `train.train_runs` call (vmapped), any other point one such call of
one run. The default --vmap_seeds=auto groups them on GPUs and TPUs only
(docs/performance.md says why).
"""

import copy
import difflib
import hashlib
import itertools
import json
import os
import sys
import time
import traceback
from typing import Any
import urllib.parse

from absl import flags
from absl import logging
import jax
import ml_collections

from cnn_jax import cli
from cnn_jax import errors
from cnn_jax import input_pipeline
from cnn_jax import parallel
from cnn_jax import records
from cnn_jax import report
from cnn_jax import run as run_lib
from cnn_jax import monitor
from cnn_jax import train
from cnn_jax import validation

FLAGS = flags.FLAGS


class SweepError(errors.UserError):
  """A sweep spec or sweep folder that cannot be run as it is."""


def load_sweep(config_path: str) -> dict[str, Any]:
  """Calls get_sweep() of the sweep config file and checks what it returns."""
  module = cli.load_config_module(config_path)
  if not hasattr(module, 'get_sweep'):
    raise SweepError(f'--config: {config_path} has no get_sweep(); give '
                     f'python -m cnn_jax.sweep a sweep config such as '
                     f'configs/sweeps/activation_pooling.py')
  try:
    sweep = module.get_sweep()
  except Exception as e:  # pylint: disable=broad-except
    # Whatever get_sweep() raises is a mistake in the file.
    raise SweepError(f'--config: {config_path}: get_sweep() raised '
                     f'{type(e).__name__}: {e}') from None
  check_sweep(sweep)
  return sweep


def check_sweep(sweep: Any) -> None:
  """Raises SweepError unless the spec has axes with values and a table.

  Checked before anything runs: a table field that names no axis would
  otherwise pass the whole sweep and fail only in the report.
  """
  if not isinstance(sweep, dict):
    raise SweepError(f'get_sweep() must return a dict; got '
                     f'{type(sweep).__name__}')
  missing = [k for k in ('axes', 'rows', 'cols', 'metric') if k not in sweep]
  if missing:
    raise SweepError(f'the sweep spec lacks {", ".join(missing)}')
  axes = sweep['axes']
  if not isinstance(axes, dict) or not axes:
    raise SweepError('sweep axes must be a dict of field -> list of values, '
                     'with at least one field')
  for field, values in axes.items():
    if not isinstance(field, str):
      raise SweepError(f'sweep axes must be named by dotted config fields; '
                       f'got {validation.shown(field)}')
    if not isinstance(values, (list, tuple)) or not values:
      raise SweepError(f'sweep axis {field} must be a non-empty list of '
                       f'values; got {validation.shown(values)}')
    for value in values:
      if isinstance(value, dict) and not isinstance(value.get('name'), str):
        raise SweepError(f'sweep axis {field}: a value that sets several '
                         f'fields needs a "name" for its folder and table; '
                         f'got {validation.shown(value)}')
    _check_distinct_labels(field, values)
  try:  # sweep.json records the spec: it must be JSON, checked up front.
    json.dumps({k: v for k, v in sweep.items() if k != 'axes'})
  except (TypeError, ValueError) as e:
    raise SweepError(f'the sweep spec must hold JSON values only (str, '
                     f'number, bool, None, list, dict): {e}') from None
  for key in ('rows', 'cols'):
    if not isinstance(sweep[key], str) or sweep[key] not in axes:
      raise SweepError(f'sweep {key} must be one of the axes '
                       f'({", ".join(axes)}); got {sweep[key]}')
    # The table is keyed by the values' labels, which a list is not.
    for value in axes[sweep[key]]:
      if isinstance(value, (list, tuple)):
        raise SweepError(f'sweep {key} {sweep[key]}: '
                         f'{validation.shown(value)} is a list; rows and '
                         f'cols need plain values or named variants')
  if sweep['metric'] not in report.METRICS:
    raise SweepError(f'sweep metric must be one of '
                     f'{", ".join(report.METRICS)}; got {sweep["metric"]}')


def points(axes: dict[str, list]) -> list[dict[str, Any]]:
  """The cross product of the axes, first axis slowest."""
  fields = list(axes)
  return [dict(zip(fields, values))
          for values in itertools.product(*axes.values())]


def label(value: Any) -> Any:
  """An axis value as folders and tables show it.

  A value may be a dict that sets several fields at once (a variant, as a
  baseline that changes two fields); its "name" stands for it.
  """
  return value['name'] if isinstance(value, dict) else value


def overrides(point: dict[str, Any]) -> dict[str, Any]:
  """{dotted field: value} that the point sets, variants spelt out."""
  out = {}
  for field, value in point.items():
    if isinstance(value, dict):
      out.update({f: v for f, v in value.items() if f != 'name'})
    else:
      out[field] = value
  return out


def _check_distinct_labels(field: str, values: list[Any]) -> None:
  """Raises SweepError if two values of an axis would share a folder name.

  Points are told apart by their folders and their table cells, both named
  by the values' labels: two values of one label would be one point.
  """
  seen = {}
  for value in values:
    part = _escape(str(label(value)))
    if part in seen:
      first = seen[part]
      if not isinstance(first, dict) and not isinstance(value, dict):
        raise SweepError(f'sweep axis {field} lists '
                         f'{validation.shown(label(value))} twice')
      raise SweepError(f'sweep axis {field}: {validation.shown(first)} and '
                       f'{validation.shown(value)} are both named '
                       f'{label(value)}, which names their points\' '
                       f'folders; give them distinct names')
    seen[part] = value


def point_name(point: dict[str, Any]) -> str:
  """The point's readable name, e.g. activation=relu,seed=0.

  Logs and sweep.json show it; the point's folder is `point_folder`.
  """
  return ','.join(f'{field.split(".")[-1]}={label(value)}'
                  for field, value in point.items())


# Besides letters, digits and '_.-~' (which `quote` keeps), a point folder
# keeps '+' (1e+30): the folders of sweeps already started used no other
# characters in their values, so they resume. Any other is %-escaped: no
# value can add a path separator, or a ',' or '=' that would make two
# points' names one.
_SAFE = '+'
# Longer folder names keep their start, and the whole in a hash: a file
# name may have at most 255 bytes.
_MAX_FOLDER = 128
_HASH_CHARS = 16


def _escape(text: str) -> str:
  return urllib.parse.quote(text, safe=_SAFE)


def point_folder(point: dict[str, Any]) -> str:
  """The name of the point's folder: one path component, inside the sweep's.

  The readable name where it is safe (activation=relu,seed=0), else its
  values %-escaped (pooling=x%2F..%2Fy); too long, its start and a stable
  hash of the whole. sweep.json lists both names.
  """
  folder = ','.join(f'{_escape(field.split(".")[-1])}='
                    f'{_escape(str(label(value)))}'
                    for field, value in point.items())
  if len(folder) <= _MAX_FOLDER:
    return folder
  digest = hashlib.sha256(folder.encode()).hexdigest()[:_HASH_CHARS]
  start = folder[:_MAX_FOLDER - _HASH_CHARS - 1]
  # Not cut inside an escape: '%C3%A' would read as something else.
  cut = start.find('%', len(start) - 2)
  return f'{start[:cut] if cut >= 0 else start}~{digest}'


def check_point_folders(workdir: str, todo: list[dict[str, Any]]) -> list[str]:
  """The points' folder names, or SweepError before anything is written.

  Each folder must be its own, and resolve inside the sweep folder: an
  existing link to elsewhere would have the run (and --start_over's
  clearing) write outside it.
  """
  folders = [point_folder(p) for p in todo]
  root = os.path.realpath(workdir)
  seen = {}
  for point, folder in zip(todo, folders):
    name = point_name(point)
    path = os.path.join(workdir, folder)
    resolved = os.path.realpath(path)
    if os.path.dirname(resolved) != root:
      raise SweepError(f'sweep point {name}: its folder {path} leads to '
                       f'{resolved}, outside the sweep folder {root}; remove '
                       f'it or choose another --workdir')
    if resolved in seen:  # A link to another point's folder, or a hash's.
      raise SweepError(f'sweep points {seen[resolved]} and {name} would '
                       f'share the folder {resolved}; give their values '
                       f'distinct names')
    seen[resolved] = name
    if os.path.exists(path) and not os.path.isdir(path):
      raise SweepError(f'sweep point {name}: {path} is a file, not a '
                       f'folder; move it away')
  return folders


def _frozen(value: Any) -> Any:
  """A hashable form of a config's dict, equal where the values are equal."""
  if isinstance(value, dict):
    return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
  if isinstance(value, (list, tuple)):
    return tuple(_frozen(v) for v in value)
  return value


def _check_distinct_configs(configs: dict[str, ml_collections.ConfigDict],
                            names: dict[str, str]) -> None:
  """Raises SweepError if two points would train the same config.

  Values that differ only in how they are written (0 and 0.0) make one
  config: trained twice, its one result would count as two seeds.
  """
  seen = {}
  for folder, config in configs.items():
    key = _frozen(config.to_dict())
    if key in seen:
      raise SweepError(f'sweep points {names[seen[key]]} and {names[folder]} '
                       f'train the same config; drop one of them')
    seen[key] = folder


def _field_names(config: ml_collections.ConfigDict,
                 prefix: str = '') -> list[str]:
  """Every leaf field's dotted name, for suggesting the one a typo meant."""
  names = []
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      names += _field_names(value, f'{prefix}{key}.')
    else:
      names.append(prefix + key)
  return names


def point_config(base: ml_collections.ConfigDict,
                 point: dict[str, Any]) -> ml_collections.ConfigDict:
  """The base config with the point's values, locked: no field can be added.

  A misspelt axis would otherwise add a field nothing reads, and train the
  base value under the misspelt name.
  """
  config = copy.deepcopy(base)
  config.lock()
  fields = _field_names(base)
  for field, value in overrides(point).items():
    group = [f for f in fields if f.startswith(f'{field}.')]
    if group:
      # Set whole, a group would lose the fields the value leaves out.
      raise validation.ConfigError(
          f'sweep axis {field} is a group of fields; set each by its dotted '
          f'name, e.g. {group[0]}')
    try:
      config.update_from_flattened_dict({field: value})
    except (KeyError, AttributeError):
      close = difflib.get_close_matches(field, fields, n=1)
      hint = f' (did you mean {close[0]}?)' if close else ''
      raise validation.ConfigError(
          f'sweep axis {field} is not a config field{hint}') from None
    except TypeError:
      raise validation.ConfigError(
          f'sweep axis {field}: {validation.shown(value)} has the wrong '
          f'type for that field') from None
  return config


def _status(point_dir: str) -> str:
  """todo, partial, done or diverged: what a rerun does with the point."""
  summary = run_lib.read_summary(point_dir)
  if summary:
    return 'diverged' if summary.get('status') == 'diverged' else 'done'
  # A point stopped before its first checkpoint starts again from scratch:
  # it may still train with its other seeds.
  checkpoints = os.path.join(point_dir, run_lib.CHECKPOINTS)
  if os.path.isdir(checkpoints) and any(
      name.isdigit() for name in os.listdir(checkpoints)):
    return 'partial'
  return 'todo'


def _changed_points(configs: dict[str, ml_collections.ConfigDict],
                    workdir: str) -> dict[str, list[str]]:
  """{point: changed fields} for points started with another config."""
  changed = {}
  for name, config in configs.items():
    started = run_lib.started_config(os.path.join(workdir, name))
    changes = run_lib.config_changes(started, config) if started else []
    if changes:
      changed[name] = changes
  return changed


def program_groups(configs: dict[str, ml_collections.ConfigDict],
                   status: dict[str, str]) -> list[list[str]]:
  """Points to train together: those not started that share a program
  (`train.program_key`: their configs differ only in `train.PER_RUN_FIELDS`).

  Started (partial) points resume alone, from their own checkpoints.
  """
  groups: dict[str, list[str]] = {}
  order = []
  for name, config in configs.items():
    # With a target accuracy each run stops at its own epoch: no grouping.
    if status[name] != 'todo' or config.target_test_accuracy:
      key = name
    else:
      key = train.program_key(config)
    if key not in groups:
      groups[key] = []
      order.append(key)
    groups[key].append(name)
  return [groups[k] for k in order]


def _train(configs: dict[str, ml_collections.ConfigDict], group: list[str],
           workdir: str, start_over: bool) -> list[dict[str, Any]]:
  dirs = [os.path.join(workdir, n) for n in group]
  return train.train_runs([configs[n] for n in group], dirs,
                          start_over=start_over)


def _train_group(configs: dict[str, ml_collections.ConfigDict],
                 group: list[str], workdir: str, changed: bool,
                 start_over: bool) -> list[dict[str, Any]]:
  """`_train`; with `start_over`, a point whose folder cannot be resumed (a
  damaged checkpoint) trains again from scratch, as its error advises."""
  try:
    return _train(configs, group, workdir, start_over=changed)
  except run_lib.RunFolderError as e:
    if not start_over or changed:
      raise
    logging.warning('points %s: %s; with --start_over they train again from '
                    'scratch', ', '.join(group), str(e).split('; ')[0])
    return _train(configs, group, workdir, start_over=True)


def _record_failure(workdir: str, group: list[str], trace: str) -> None:
  """Writes each point's error.txt; one that cannot be written is logged.

  A failure to record a failure (a full disk, a folder in the way) must not
  end the sweep: the other points still train.
  """
  for name in group:
    path = os.path.join(workdir, name, records.FAILED_FILE)
    try:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, 'w') as f:
        f.write(trace)
    except OSError as e:
      logging.error('cannot write %s (%s); the failure was:\n%s', path,
                    e.strerror or e, trace)


def _clear_failure(path: str) -> None:
  """Removes a point's error.txt from an earlier, failed try, if any."""
  try:
    if os.path.lexists(path):
      os.remove(path)
  except OSError as e:
    logging.warning('cannot remove %s (%s); the point trained', path,
                    e.strerror or e)


def run_sweep(base: ml_collections.ConfigDict, sweep: dict[str, Any],
              workdir: str, dry_run: bool = False,
              vmap_seeds: bool = True,
              start_over: bool = False) -> dict[str, str]:
  """Runs the points not yet done; returns {point folder: status}.

  With `vmap_seeds`, points that share a program train together in it
  (`program_groups`, `train.train_runs`); otherwise one after another.
  Points whose folders hold a run of another config are refused, or with
  `start_over` trained again from scratch, as are points whose checkpoint
  cannot be read (without, they fail alone).
  """
  check_sweep(sweep)
  workdir = records.check_folder(workdir, 'sweep workdir')
  held = [n for n in (records.CONFIG_FILE, records.SUMMARY_FILE,
                      run_lib.CHECKPOINTS)
          if os.path.lexists(os.path.join(workdir, n))]
  if held:  # A run's files and a sweep's points must not mix.
    raise SweepError(f'sweep workdir {workdir} holds a training run ('
                     f'{", ".join(held)}); give the sweep a folder of its own')
  todo = points(sweep['axes'])
  folders = check_point_folders(workdir, todo)
  readable = {f: point_name(p) for f, p in zip(folders, todo)}
  configs = {f: point_config(base, p) for f, p in zip(folders, todo)}
  # sweep.json names each value by its label; the fields a point sets are
  # spelt out beside it. A point's "name" is its folder, as it always was.
  listing = [{'name': f, 'readable_name': readable[f],
              'overrides': overrides(p),
              'values': {a: label(v) for a, v in p.items()}}
             for f, p in zip(folders, todo)]
  labelled = {f: [label(v) for v in vs] for f, vs in sweep['axes'].items()}
  # Every point is checked before any runs, so a bad sweep writes nothing.
  for config in configs.values():
    validation.check_config(config)
  _check_distinct_configs(configs, readable)
  names = list(configs)
  changed = _changed_points(configs, workdir)
  if changed and not start_over:
    first = next(iter(changed))
    raise SweepError(
        f'{len(changed)} of {len(names)} points were started with another '
        f'config, e.g. {first}: {", ".join(changed[first])}; rerun with '
        f'their values, or pass --start_over to train those points again')
  status = {n: 'todo' if n in changed else
            _status(os.path.join(workdir, n)) for n in names}
  if dry_run:
    for n in names:
      # One line a point, whatever its values hold.
      name = readable[n] if readable[n].isprintable() else repr(readable[n])
      shown = '' if readable[n] == n else f'  ({name})'
      print(f'{status[n]:8s} {n}{shown}')
    return status
  pending = [n for n in names if status[n] in ('todo', 'partial')]
  if pending:  # Data errors surface before anything is written.
    input_pipeline.load_splits(configs[pending[0]].data)

  # Every process reads the points' status before any of them writes.
  parallel.sync('sweep status read')
  writes = parallel.is_main_process()
  if writes:
    records.claim_folder(workdir)
    records.write_json(os.path.join(workdir, records.SWEEP_FILE),
                       dict(sweep, axes=labelled, points=listing))
  groups = (program_groups({n: configs[n] for n in pending}, status)
            if vmap_seeds else [[n] for n in pending])
  ran_seconds, ran = 0.0, 0
  # On a terminal, a bar of points done, left and ETA too.
  for group in monitor.track(
      groups, size=len, total=len(names), initial=len(names) - len(pending),
      desc='sweep', unit='point'):
    t0 = time.time()
    logging.info('points %s (%s)', ', '.join(group),
                 ', '.join(status[n] for n in group))
    failure = None
    try:
      summaries = _train_group(configs, group, workdir,
                               any(n in changed for n in group), start_over)
    except run_lib.RunFolderError as e:
      failure = f'{e}\n'  # This point's folder: the others go on.
    except errors.UserError:
      raise  # The user's to fix, and the next points would meet it too.
    except Exception:  # pylint: disable=broad-except
      failure = traceback.format_exc()
    if failure:
      # One failed point must not stop the others; the report shows it.
      for name in group:
        status[name] = 'failed'
      logging.error('points %s failed; see %s: %s', ', '.join(group),
                    records.FAILED_FILE, failure.strip().splitlines()[-1])
      if writes:
        _record_failure(workdir, group, failure)
    else:
      for name, summary in zip(group, summaries):
        status[name] = 'diverged' if summary['status'] == 'diverged' else (
            'done')
        if writes:
          _clear_failure(os.path.join(workdir, name, records.FAILED_FILE))
    ran_seconds += time.time() - t0
    ran += len(group)
    left = sum(s in ('todo', 'partial') for s in status.values())
    done = sum(s in ('done', 'diverged') for s in status.values())
    logging.info('sweep: %d/%d points done, %d left, ETA %.0f min', done,
                 len(names), left, left * ran_seconds / ran / 60)
  return status


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])}')
  cli.start()
  try:
    workdir = cli.workdir()
    sweep = load_sweep(cli.config_file())
    vmap_seeds = (jax.default_backend() != 'cpu' if FLAGS.vmap_seeds == 'auto'
                  else FLAGS.vmap_seeds == 'true')
    logging.info('seeds vmapped: %s', vmap_seeds)
    status = run_sweep(FLAGS.config, sweep, workdir, FLAGS.dry_run,
                       vmap_seeds, FLAGS.start_over)
  except errors.UserError as e:
    cli.fail(str(e))
  if any(s == 'failed' for s in status.values()):
    sys.exit(1)


if __name__ == '__main__':
  cli.define_flags()
  flags.DEFINE_bool('dry_run', False, 'List the points and run nothing.')
  flags.DEFINE_enum('vmap_seeds', 'auto', ['auto', 'true', 'false'],
                    'Train points that share a program (differ only in seed, '
                    'learning rate, weight decay, label smoothing) together, '
                    'in one vmapped program. auto: on GPUs and TPUs only '
                    '(docs/performance.md).')
  cli.run(main, 'run the same command again to resume: finished points are '
          'kept, and the interrupted one resumes from its last checkpoint')
