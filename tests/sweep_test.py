"""Sweeps: every point in its own folder, resumable, failures recorded."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import tensorflow_datasets as tfds

from cnn_jax import report
from cnn_jax import sweep
from cnn_jax import validation
import _util

SWEEP = {
    'axes': {'model.activation': ['relu', 'tanh'], 'model.pooling': ['max'],
             'seed': [0, 1]},
    'rows': 'model.activation', 'cols': 'model.pooling',
    'metric': 'test_accuracy',
}


def _run(sweep_spec, workdir, **kwargs):
  with tfds.testing.mock_data(num_examples=48):
    return sweep.run_sweep(_util.tiny_config(), sweep_spec, str(workdir),
                           **kwargs)


def _summary(workdir, name):
  with open(os.path.join(workdir, name, 'summary.json')) as f:
    return json.load(f)


def test_points_are_the_cross_product_with_readable_names():
  pts = sweep.points(SWEEP['axes'])
  assert [sweep.point_name(p) for p in pts] == [
      'activation=relu,pooling=max,seed=0', 'activation=relu,pooling=max,seed=1',
      'activation=tanh,pooling=max,seed=0', 'activation=tanh,pooling=max,seed=1']
  config = sweep.point_config(_util.tiny_config(), pts[3])
  assert config.model.activation == 'tanh' and config.seed == 1


def test_misspelt_axis_is_refused_naming_the_field():
  """Points are built on a locked config: a typo cannot add a field."""
  with pytest.raises(validation.ConfigError,
                     match='sweep axis model.activaton is not a config field '
                           r'\(did you mean model.activation\?\)'):
    sweep.point_config(_util.tiny_config(), {'model.activaton': 'tanh'})
  with pytest.raises(validation.ConfigError, match='wrong type'):
    sweep.point_config(_util.tiny_config(), {'learning_rate': 'fast'})


def test_sweep_runs_resumes_and_skips_finished_points(tmp_path):
  status = _run(SWEEP, tmp_path)
  assert set(status.values()) == {'done'}
  first = _summary(tmp_path, 'activation=tanh,pooling=max,seed=1')
  assert first['config']['model']['activation'] == 'tanh'
  assert first['config']['seed'] == 1

  # Interrupt one point after its only epoch's checkpoint was written but
  # before its summary: the rerun resumes it and touches nothing else.
  os.remove(tmp_path / 'activation=tanh,pooling=max,seed=1' / 'summary.json')
  untouched = os.path.getmtime(tmp_path / 'activation=relu,pooling=max,seed=0' /
                               'summary.json')
  status = _run(SWEEP, tmp_path)
  assert set(status.values()) == {'done'}
  again = _summary(tmp_path, 'activation=tanh,pooling=max,seed=1')
  assert again['test_loss'] == first['test_loss']
  with open(tmp_path / 'activation=tanh,pooling=max,seed=1' / 'metrics.jsonl') as f:
    assert len(f.readlines()) == 1  # Not trained twice.
  assert os.path.getmtime(tmp_path / 'activation=relu,pooling=max,seed=0' /
                          'summary.json') == untouched

  tables = report.write_report(str(tmp_path))
  assert '(n=2)' in tables['markdown']
  assert '**' in tables['markdown']  # The best cell is marked.
  assert tables['csv'].count('\n') == 3  # Header and two activations.
  assert ' best' in tables['csv']
  assert '\\begin{tabular}{lc}' in tables['latex']
  assert '\\mathbf{' in tables['latex'] and '\\pm' in tables['latex']
  for name in ('heatmap.png', 'learning_curves.png', 'table.tex'):
    assert os.path.exists(tmp_path.parent / name)


def test_failed_point_is_reported_as_failed_not_as_a_number(tmp_path):
  spec = dict(SWEEP, axes={'model.activation': ['relu'],
                           'learning_rate': [1e-3, 1e30]},
              cols='learning_rate')
  status = _run(spec, tmp_path)
  assert status['activation=relu,learning_rate=1e+30'] == 'failed'
  assert status['activation=relu,learning_rate=0.001'] == 'done'
  assert os.path.exists(tmp_path / 'activation=relu,learning_rate=1e+30' /
                        'error.txt')
  # A missing point, never run, also shows as such.
  shutil.rmtree(tmp_path / 'activation=relu,learning_rate=0.001')
  markdown = report.write_report(str(tmp_path))['markdown']
  assert '1 failed' in markdown and '1 missing' in markdown
  assert '±' not in markdown


def test_dry_run_lists_points_and_writes_nothing(tmp_path):
  workdir = tmp_path / 'sweep'
  proc = subprocess.run(
      [sys.executable, '-m', 'cnn_jax.sweep',
       f'--config={_util.ROOT}/configs/sweeps/activation_pooling.py',
       f'--workdir={workdir}', '--dry_run', '--config.num_epochs=1'],
      cwd=_util.ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = proc.stdout.splitlines()
  assert len(lines) == 3 * 4 * 3
  assert all(line.startswith('todo') for line in lines)
  assert 'activation=relu,pooling=gaussian,seed=2' in proc.stdout
  assert not workdir.exists()


def test_bad_override_fails_before_any_point_runs(tmp_path):
  workdir = tmp_path / 'sweep'
  proc = subprocess.run(
      [sys.executable, '-m', 'cnn_jax.sweep',
       f'--config={_util.ROOT}/configs/sweeps/batch_norm.py',
       f'--workdir={workdir}', '--config.learning_rate=-1'],
      cwd=_util.ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (
      'error: config.learning_rate must be > 0; got -1.0')
  assert not workdir.exists()


def test_points_differing_only_in_seed_train_together():
  base = _util.tiny_config()
  configs = {sweep.point_name(p): sweep.point_config(base, p)
             for p in sweep.points(SWEEP['axes'])}
  status = {n: 'todo' for n in configs}
  assert sweep.seed_groups(configs, status) == [
      ['activation=relu,pooling=max,seed=0', 'activation=relu,pooling=max,seed=1'],
      ['activation=tanh,pooling=max,seed=0', 'activation=tanh,pooling=max,seed=1']]
  # With a target accuracy every run stops at its own epoch: none grouped.
  targeted = {n: sweep.point_config(base, p) for n, p in zip(
      configs, sweep.points(SWEEP['axes']))}
  for config in targeted.values():
    config.unlock()
    config.target_test_accuracy = 0.5
  assert all(len(g) == 1 for g in sweep.seed_groups(targeted, status))
  # A started point resumes alone.
  status['activation=tanh,pooling=max,seed=1'] = 'partial'
  assert sweep.seed_groups(configs, status)[1:] == [
      ['activation=tanh,pooling=max,seed=0'],
      ['activation=tanh,pooling=max,seed=1']]


def test_vmapped_sweep_equals_the_one_by_one_sweep(tmp_path):
  spec = dict(SWEEP, axes={'model.activation': ['relu'], 'seed': [0, 1]})
  assert set(_run(spec, tmp_path / 'v').values()) == {'done'}
  assert set(_run(spec, tmp_path / 's', vmap_seeds=False).values()) == {'done'}
  for name in ('activation=relu,seed=0', 'activation=relu,seed=1'):
    v, s = _summary(tmp_path / 'v', name), _summary(tmp_path / 's', name)
    assert v['seeds_in_program'] == 2 and s['seeds_in_program'] == 1
    assert v['config'] == s['config']
    # Float tolerance, as train_test's whole-run comparison explains.
    assert abs(v['test_loss'] - s['test_loss']) <= 1e-3 * s['test_loss']
