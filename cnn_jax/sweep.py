"""Runs every point of a sweep config, each in its own sub-folder.

  python -m cnn_jax.sweep --config=configs/sweeps/activation_pooling.py \
      --workdir=DIR [--config.num_epochs=1 ...] [--dry_run]

`--config.<field>` overrides apply to every point. Run the same command again
after an interruption: finished points (with a summary.json) are skipped and
an interrupted point resumes from its checkpoint. No training logic lives
here: points that differ only in seed are one `train.train_seeds` call
(vmapped), any other point one `train.train_and_evaluate` call. The default
--vmap_seeds=auto groups seeds on GPUs and TPUs only: on the 2-core CPU the
vmapped program was slower than the runs one by one (README, benchmark).
"""

import copy
import difflib
import importlib.util
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
from ml_collections import config_flags

from cnn_jax import cli
from cnn_jax import parallel
from cnn_jax import records
from cnn_jax import train
from cnn_jax import validation

FLAGS = flags.FLAGS

SWEEP_FILE = 'sweep.json'
FAILED_FILE = 'error.txt'


def load_sweep(config_path: str) -> dict[str, Any]:
  """Calls get_sweep() of the sweep config file."""
  spec = importlib.util.spec_from_file_location('sweep_config', config_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_sweep()


def points(axes: dict[str, list]) -> list[dict[str, Any]]:
  """The cross product of the axes, first axis slowest."""
  fields = list(axes)
  return [dict(zip(fields, values))
          for values in itertools.product(*axes.values())]


def point_name(point: dict[str, Any]) -> str:
  """A folder name from the point's values, e.g. activation=relu,seed=0."""
  return ','.join(f'{field.split(".")[-1]}={value}'
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
  for field, value in point.items():
    try:
      config.update_from_flattened_dict({field: value})
    except (KeyError, AttributeError):
      close = difflib.get_close_matches(field, _field_names(base), n=1)
      hint = f' (did you mean {close[0]}?)' if close else ''
      raise validation.ConfigError(
          f'sweep axis {field} is not a config field{hint}') from None
    except TypeError:
      raise validation.ConfigError(
          f'sweep axis {field}: {value!r} has the wrong type for that '
          f'field') from None
  return config


def _status(point_dir: str) -> str:
  if os.path.exists(os.path.join(point_dir, 'summary.json')):
    return 'done'
  if os.path.exists(os.path.join(point_dir, 'checkpoints')):
    return 'partial'
  return 'todo'


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
           workdir: str) -> None:
  dirs = [os.path.join(workdir, n) for n in group]
  if len(group) == 1:
    train.train_and_evaluate(configs[group[0]], dirs[0])
  else:
    train.train_seeds(configs[group[0]], [configs[n].seed for n in group],
                      dirs)


def run_sweep(base: ml_collections.ConfigDict, sweep: dict[str, Any],
              workdir: str, dry_run: bool = False,
              vmap_seeds: bool = True) -> dict[str, str]:
  """Runs the points not yet done; returns {point name: status}.

  With `vmap_seeds`, points that differ only in seed train together in one
  program (`train.train_seeds`); otherwise one after another.
  """
  todo = points(sweep['axes'])
  configs = {point_name(p): point_config(base, p) for p in todo}
  listing = [{'name': point_name(p), 'values': p} for p in todo]
  # Every point is checked before any runs, so a bad sweep writes nothing.
  for config in configs.values():
    validation.check_config(config)
  names = list(configs)
  status = {n: _status(os.path.join(workdir, n)) for n in names}
  if dry_run:
    for n in names:
      print(f'{status[n]:8s} {n}')
    return status

  # Every process reads the points' status before any of them writes.
  parallel.sync('sweep status read')
  writes = parallel.is_main_process()
  os.makedirs(workdir, exist_ok=True)
  if writes:
    records.claim_folder(workdir)
    records.write_json(os.path.join(workdir, SWEEP_FILE),
                       dict(sweep, points=listing))
  pending = [n for n in names if status[n] != 'done']
  groups = (seed_groups({n: configs[n] for n in pending}, status)
            if vmap_seeds else [[n] for n in pending])
  ran_seconds, ran = 0.0, 0
  for group in groups:
    t0 = time.time()
    logging.info('points %s (%s)', ', '.join(group),
                 ', '.join(status[n] for n in group))
    try:
      _train(configs, group, workdir)
      for name in group:
        status[name] = 'done'
        error_file = os.path.join(workdir, name, FAILED_FILE)
        if writes and os.path.exists(error_file):
          os.remove(error_file)
    except Exception:  # pylint: disable=broad-except
      # One failed point must not stop the others; the report shows it.
      for name in group:
        status[name] = 'failed'
        if writes:
          os.makedirs(os.path.join(workdir, name), exist_ok=True)
          with open(os.path.join(workdir, name, FAILED_FILE), 'w') as f:
            f.write(traceback.format_exc())
      logging.error('points %s failed; see %s', ', '.join(group), FAILED_FILE)
    ran_seconds += time.time() - t0
    ran += len(group)
    left = sum(s in ('todo', 'partial') for s in status.values())
    done = sum(s == 'done' for s in status.values())
    logging.info('sweep: %d/%d points done, %d left, ETA %.0f min', done,
                 len(names), left, left * ran_seconds / ran / 60)
  return status


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])}')
  cli.start()
  try:
    sweep = load_sweep(config_flags.get_config_filename(FLAGS['config']))
    vmap_seeds = (jax.default_backend() != 'cpu' if FLAGS.vmap_seeds == 'auto'
                  else FLAGS.vmap_seeds == 'true')
    status = run_sweep(FLAGS.config, sweep, FLAGS.workdir, FLAGS.dry_run,
                       vmap_seeds)
  except (validation.ConfigError, records.FolderInUse) as e:
    cli.fail(str(e))
  if any(s == 'failed' for s in status.values()):
    sys.exit(1)


if __name__ == '__main__':
  cli.define_flags()
  flags.DEFINE_bool('dry_run', False, 'List the points and run nothing.')
  flags.DEFINE_enum('vmap_seeds', 'auto', ['auto', 'true', 'false'],
                    'Train points that differ only in seed together, in one '
                    'vmapped program. auto: on GPUs and TPUs only (on a '
                    '2-core CPU it was slower; see the README).')
  app.run(main, flags_parser=cli.parse_flags)
