"""Runs every point of a sweep config, each in its own sub-folder.

  python -m cnn_jax.sweep --config=configs/sweeps/activation_pooling.py \
      --workdir=DIR [--config.num_epochs=1 ...] [--dry_run]

`--config.<field>` overrides apply to every point. Run the same command again
after an interruption: finished points (with a summary.json) are skipped and
an interrupted point resumes from its last checkpoint (or, stopped before
its first, trains again with the points not yet started). A rerun whose
points' configs differ from those their folders were started with is
refused, unless `--start_over` is given: then those points train again from
scratch. A point that diverges is recorded as such and the sweep goes on. No
training logic lives here: points that differ only in seed are one
`train.train_seeds` call (vmapped), any other point one such call of one
seed. The default
--vmap_seeds=auto groups seeds on GPUs and TPUs only: on the 2-core CPU the
vmapped program was slower than the runs one by one (README, benchmark).
Likewise --compile_ahead=auto (with the compilation cache on): while a point
trains, a thread compiles the next point's programs into the cache
(`train.precompile`).
"""

import concurrent.futures
import copy
import difflib
import itertools
import json
import os
import sys
import time
import traceback
from typing import Any

from absl import app
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
  sweep = module.get_sweep()
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
    if not isinstance(values, (list, tuple)) or not values:
      raise SweepError(f'sweep axis {field} must be a non-empty list of '
                       f'values; got {validation.shown(values)}')
    for value in values:
      if isinstance(value, dict) and not isinstance(value.get('name'), str):
        raise SweepError(f'sweep axis {field}: a value that sets several '
                         f'fields needs a "name" for its folder and table; '
                         f'got {validation.shown(value)}')
  for key in ('rows', 'cols'):
    if sweep[key] not in axes:
      raise SweepError(f'sweep {key} must be one of the axes '
                       f'({", ".join(axes)}); got {sweep[key]}')
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


def point_name(point: dict[str, Any]) -> str:
  """A folder name from the point's values, e.g. activation=relu,seed=0."""
  return ','.join(f'{field.split(".")[-1]}={label(value)}'
                  for field, value in point.items())


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
  for field, value in overrides(point).items():
    try:
      config.update_from_flattened_dict({field: value})
    except (KeyError, AttributeError):
      close = difflib.get_close_matches(field, _field_names(base), n=1)
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


def seed_groups(configs: dict[str, ml_collections.ConfigDict],
                status: dict[str, str]) -> list[list[str]]:
  """Points to train together: those not started whose configs differ only in seed.

  Started (partial) points resume alone, from their own checkpoints.
  """
  groups: dict[str, list[str]] = {}
  order = []
  for name, config in configs.items():
    # With a target accuracy each run stops at its own epoch: no grouping.
    if status[name] != 'todo' or config.target_test_accuracy:
      key = name
    else:
      rest = config.to_dict()
      rest.pop('seed')
      key = json.dumps(rest, sort_keys=True)
    if key not in groups:
      groups[key] = []
      order.append(key)
    groups[key].append(name)
  return [groups[k] for k in order]


def _train(configs: dict[str, ml_collections.ConfigDict], group: list[str],
           workdir: str, start_over: bool) -> list[dict[str, Any]]:
  dirs = [os.path.join(workdir, n) for n in group]
  return train.train_seeds(configs[group[0]],
                           [configs[n].seed for n in group], dirs,
                           start_over=start_over)


def _compile_ahead(configs: dict[str, ml_collections.ConfigDict],
                   group: list[str]) -> concurrent.futures.Future | None:
  """`train.precompile_in_thread` for a group of points."""
  config = configs[group[0]]
  # Read here: TFDS is not to be read from two threads at once.
  return train.precompile_in_thread(config, len(group),
                                    input_pipeline.load_splits(config.data))


def run_sweep(base: ml_collections.ConfigDict, sweep: dict[str, Any],
              workdir: str, dry_run: bool = False,
              vmap_seeds: bool = True,
              start_over: bool = False,
              compile_ahead: bool = False) -> dict[str, str]:
  """Runs the points not yet done; returns {point name: status}.

  With `vmap_seeds`, points that differ only in seed train together in one
  program (`train.train_seeds`); otherwise one after another. Points whose
  folders hold a run of another config are refused, or with `start_over`
  trained again from scratch. With `compile_ahead`, the next points'
  programs compile in a thread while a point trains
  (`train.precompile_in_thread`); the first points' compile before, alone.
  """
  check_sweep(sweep)
  workdir = records.check_folder(workdir, 'sweep workdir')
  todo = points(sweep['axes'])
  configs = {point_name(p): point_config(base, p) for p in todo}
  # sweep.json names each value by its label; the fields a point sets are
  # spelt out beside it.
  listing = [{'name': point_name(p), 'overrides': overrides(p),
              'values': {f: label(v) for f, v in p.items()}} for p in todo]
  labelled = {f: [label(v) for v in vs] for f, vs in sweep['axes'].items()}
  # Every point is checked before any runs, so a bad sweep writes nothing.
  for config in configs.values():
    validation.check_config(config)
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
      print(f'{status[n]:8s} {n}')
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
  groups = (seed_groups({n: configs[n] for n in pending}, status)
            if vmap_seeds else [[n] for n in pending])
  ran_seconds, ran = 0.0, 0
  # On a terminal, a bar of points done, left and ETA too.
  for i, group in enumerate(monitor.track(
      groups, size=len, total=len(names), initial=len(names) - len(pending),
      desc='sweep', unit='point')):
    t0 = time.time()
    logging.info('points %s (%s)', ', '.join(group),
                 ', '.join(status[n] for n in group))
    compiling = None
    if compile_ahead and i + 1 < len(groups):
      if i == 0 and (first := _compile_ahead(configs, group)):
        # Its own programs first, alone: compiled beside the next group's,
        # its first epoch took 15.0 s on an H200, against 4.6 s in a sweep
        # without compile-ahead (one run each, two machines; README, Speed).
        first.result()
      compiling = _compile_ahead(configs, groups[i + 1])
    try:
      summaries = _train(configs, group, workdir,
                         start_over=any(n in changed for n in group))
      for name, summary in zip(group, summaries):
        status[name] = 'diverged' if summary['status'] == 'diverged' else (
            'done')
        error_file = os.path.join(workdir, name, records.FAILED_FILE)
        if writes and os.path.exists(error_file):
          os.remove(error_file)
    except errors.UserError:
      raise  # The user's to fix, and the next points would meet it too.
    except Exception:  # pylint: disable=broad-except
      # One failed point must not stop the others; the report shows it.
      for name in group:
        status[name] = 'failed'
        if writes:
          os.makedirs(os.path.join(workdir, name), exist_ok=True)
          with open(os.path.join(workdir, name, records.FAILED_FILE), 'w') as f:
            f.write(traceback.format_exc())
      logging.error('points %s failed; see %s', ', '.join(group),
                    records.FAILED_FILE)
    if compiling:  # The next points find their programs in the cache.
      compiling.result()
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
    sweep = load_sweep(cli.config_file())
    vmap_seeds = (jax.default_backend() != 'cpu' if FLAGS.vmap_seeds == 'auto'
                  else FLAGS.vmap_seeds == 'true')
    compile_ahead = cli.compile_ahead()
    logging.info('seeds vmapped: %s; compiling ahead: %s', vmap_seeds,
                 compile_ahead)
    status = run_sweep(FLAGS.config, sweep, FLAGS.workdir, FLAGS.dry_run,
                       vmap_seeds, FLAGS.start_over, compile_ahead)
  except errors.UserError as e:
    cli.fail(str(e))
  if any(s == 'failed' for s in status.values()):
    sys.exit(1)


if __name__ == '__main__':
  cli.define_flags(sweep=True)
  flags.DEFINE_bool('dry_run', False, 'List the points and run nothing.')
  flags.DEFINE_enum('vmap_seeds', 'auto', ['auto', 'true', 'false'],
                    'Train points that differ only in seed together, in one '
                    'vmapped program. auto: on GPUs and TPUs only (on a '
                    '2-core CPU it was slower; see the README).')
  app.run(main, flags_parser=cli.parse_flags)
