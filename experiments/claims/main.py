"""The seed's three claims, each tested by a sweep and one analysis.

  python -m experiments.claims.main --config=configs/claims/relu_speed.py \
      --workdir=experiments/relu_speed

run from the repository's root, trains the sweep's missing points into
WORKDIR/runs (resumable: it is `cnn_jax.sweep`), then runs the analysis
that the sweep spec names (`analyses.ANALYSES`) and writes WORKDIR/results.md,
results.json and a plot. Every number there is read from the points' run
folders, or, for the translation probe, from the invariance.json each
point's checkpoint gave (computed once, kept beside its summary.json).
"""

import json
import math
import os
import sys
from typing import Any

from absl import flags
from absl import logging
import jax
import ml_collections

from cnn_jax import cli
from cnn_jax import errors
from cnn_jax import records
from cnn_jax import run as run_lib
from cnn_jax import sweep as sweep_lib
from cnn_jax import validation
from experiments.claims import analyses

FLAGS = flags.FLAGS

RESULTS_MD, RESULTS_JSON = 'results.md', 'results.json'


class ClaimError(errors.UserError):
  """A claim config or folder the analysis cannot use."""


def check_spec(spec: dict[str, Any]) -> None:
  """Raises ClaimError unless the sweep spec names an analysis, and what
  that analysis needs."""
  name = spec.get('analysis')
  if name not in analyses.ANALYSES:
    raise ClaimError(f"the sweep spec's analysis must be one of "
                     f'{", ".join(analyses.ANALYSES)}; got '
                     f'{validation.shown(name)}')
  levels = spec.get('levels')
  if name == 'convergence' and not (
      isinstance(levels, (tuple, list)) and levels
      and all(isinstance(l, (int, float)) and not isinstance(l, bool)
              and math.isfinite(l) and 0 < l < 1 for l in levels)):
    raise ClaimError(f"the sweep spec's levels must be a tuple of "
                     f'training-error levels in (0, 1), e.g. (0.25, 0.1); '
                     f'got {validation.shown(levels)}')


def read_points(runs_dir: str) -> list[dict[str, Any]]:
  """Each point of the sweep: its values, folder, config, summary,
  history and test accuracy (None: the run diverged)."""
  with open(os.path.join(runs_dir, records.SWEEP_FILE)) as f:
    listing = json.load(f)['points']
  out = []
  for point in listing:
    folder = os.path.join(runs_dir, point['name'])
    out.append({'values': point['values'], 'folder': folder,
                'config': run_lib.started_config(folder),
                'summary': run_lib.read_summary(folder),
                'history': records.read_json_lines(
                    os.path.join(folder, records.METRICS_FILE))})
  unfinished = [p['values'] for p in out if not p['summary']]
  if unfinished:
    raise ClaimError(f'{len(unfinished)} of {len(out)} points have no '
                     f'{records.SUMMARY_FILE} yet, e.g. {unfinished[0]}; '
                     f'run the same command again to train them')
  for p in out:
    try:
      # The report's rule: a run without a finite test accuracy diverged.
      p['test_accuracy'] = records.metric_value(p['summary'],
                                                'test_accuracy')
    except records.SummaryError as e:
      raise ClaimError(f'{os.path.join(p["folder"], records.SUMMARY_FILE)}: '
                       f'{e}') from None
  return out


def analyze(config: ml_collections.ConfigDict, spec: dict[str, Any],
            workdir: str) -> str:
  """Runs the spec's analysis on WORKDIR/runs; writes results.md/json."""
  check_spec(spec)
  name = spec['analysis']
  points = read_points(os.path.join(workdir, 'runs'))
  table, data = analyses.ANALYSES[name](points, config, spec, workdir)
  records.write_json(os.path.join(workdir, RESULTS_JSON), {
      'analysis': name, 'git_commit': records.git_commit(), **data})
  with open(os.path.join(workdir, RESULTS_MD), 'w') as f:
    f.write(table)
  return table


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])}')
  cli.start()
  try:
    spec = sweep_lib.load_sweep(cli.config_file())
    try:
      check_spec(spec)
    except ClaimError as e:
      raise ClaimError(f'--config: {e}') from None
    workdir = records.check_folder(cli.workdir())
    status = sweep_lib.run_sweep(
        FLAGS.config, spec, os.path.join(workdir, 'runs'),
        vmap_seeds=jax.default_backend() != 'cpu',
        start_over=FLAGS.start_over)
    if any(s == 'failed' for s in status.values()):
      cli.fail(f'some points failed; see their {records.FAILED_FILE}',
               status=1)
    print(analyze(FLAGS.config, spec, workdir))
  except errors.UserError as e:
    cli.fail(str(e))
  logging.info('wrote %s', os.path.join(workdir, RESULTS_MD))
  sys.stdout.flush()


if __name__ == '__main__':
  cli.define_flags()
  cli.run(main, 'run the same command again to resume: finished points are '
          'kept, and the interrupted one resumes from its last checkpoint')
