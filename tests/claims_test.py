"""The claims' analyses on small sweeps: what they read and what they write."""

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from cnn_jax import records
from cnn_jax import sweep
from experiments.claims import analyses
from experiments.claims import main as claims
from experiments.claims import marks
import _util


def _claim(tmp_path, axes, analysis, config, rows, cols, **more):
  spec = {'axes': axes, 'rows': rows, 'cols': cols,
          'metric': 'test_accuracy', 'analysis': analysis, **more}
  with tfds.testing.mock_data(num_examples=48):
    sweep.run_sweep(config, spec, str(tmp_path / 'runs'))
    table = claims.analyze(config, spec, str(tmp_path))
  with open(tmp_path / 'results.json') as f:
    return table, json.load(f)


def test_ratio_ci_brackets_the_ratio_and_is_exact_without_spread():
  r, low, high = analyses.ratio_ci([10, 12, 14], [2, 2, 2])
  assert r == 6.0 and low <= r <= high and low >= 5.0 and high <= 7.0
  assert analyses.ratio_ci([6, 6], [2, 2]) == (3.0, 3.0, 3.0)


def test_first_below_finds_the_window_that_crosses():
  errors = np.array([0.9, 0.8, 0.2, 0.1, 0.1, 0.0])
  # Windows of 2: 0.85, 0.5, 0.15, 0.1, 0.05.
  assert marks.first_below([], errors, (0.6, 0.12, 0.01), 2) == {
      0.6: 2, 0.12: 4}
  # The steps before this epoch fill the first window.
  assert marks.first_below([0.0], np.array([0.1]), (0.04,), 2) == {}
  assert marks.first_below([0.0], np.array([0.1]), (0.2,), 2) == {0.2: 0}
  assert marks.first_below([], np.array([0.0]), (0.5,), 2) == {}


def _first_mark(folder, level, window):
  """The first step whose window of errors is below `level`, and the
  training seconds up to it, read the plain way: one step at a time."""
  errors = [1 - a for _, a in _util.tensorboard_scalars(folder,
                                                        'train/accuracy')]
  seconds = [r['epoch_time_s'] for r in records.read_json_lines(
      os.path.join(folder, 'metrics.jsonl'))]
  steps = len(errors) // len(seconds)
  for end in range(window, len(errors) + 1):
    if sum(errors[end - window:end]) / window < level:
      epoch, i = divmod(end - 1, steps)
      return end, sum(seconds[:epoch]) + (i + 1) / steps * seconds[epoch]
  return None, None


def test_convergence_reads_the_marks_from_each_points_events(
    tmp_path, monkeypatch):
  monkeypatch.setattr(marks, 'MARK_WINDOW', 3)  # Across 4-step epochs.
  config = _util.tiny_config()
  config.lr_schedule = 'constant'
  config.num_epochs = 2
  table, data = _claim(
      tmp_path, {'model.batch_norm': [True], 'model.activation':
                 ['relu', 'tanh'], 'seed': [0, 1]},
      'convergence', config, 'model.activation', 'model.batch_norm',
      levels=(0.99, 0.8, 1e-9))
  assert data['budget_steps'] == 8 and data['window_steps'] == 3
  groups = {g['activation']: g for g in data['groups']}
  for act, g in groups.items():
    for seed in (0, 1):
      folder = (tmp_path / 'runs' /
                f'batch_norm=True,activation={act},seed={seed}')
      for level in ('0.99', '0.8'):
        step, seconds = _first_mark(folder, float(level), 3)
        assert g[level]['steps'][seed] == step
        assert g[level]['train_time_s'][seed] == pytest.approx(seconds)
      # Never reached: shown as such, not as a number.
      assert g['1e-09']['steps'][seed] is None
  assert g['0.99']['steps'][0] == 3  # The first full window.
  assert '2 not within 8 steps' in table
  assert os.path.getsize(tmp_path / 'convergence.png') > 0


def test_translation_probe_at_shift_0_is_the_runs_test_accuracy(tmp_path):
  config = _util.tiny_config()
  variant = {'name': 'strided', 'model.pooling': 'subsample',
             'model.conv_stride': 2, 'model.pool_window': 1,
             'model.pool_stride': 1}
  table, data = _claim(
      tmp_path, {'model.pooling': ['max', variant], 'seed': [0, 1]},
      'translation', config, 'model.pooling', 'seed')
  assert [g['pooling'] for g in data['groups']] == ['max', 'strided']
  for g in data['groups']:
    np.testing.assert_allclose([a[0] for a in g['accuracy']],
                               g['test_accuracy'], atol=1e-6)
  assert 'vs strided' in table
  probe = tmp_path / 'runs' / 'pooling=max,seed=0' / 'invariance.json'
  assert json.loads(probe.read_text())['shifts'] == list(analyses.SHIFTS)


def test_init_scale_counts_diverged_runs_and_reads_first_epoch_loss(
    tmp_path):
  config = _util.tiny_config()
  config.learning_rate = 1e6  # Drives every run to a non-finite loss.
  config.num_epochs = 2
  config.model.kernel_init_layers = 'dense'
  table, data = _claim(
      tmp_path, {'model.batch_norm': [False],
                 'model.kernel_init_scale': [1.0], 'seed': [0]},
      'init_scale', config, 'model.kernel_init_scale', 'model.batch_norm')
  (group,) = data['groups']
  assert group['diverged'] == 1 and group['test_accuracy'] == []
  assert '1 of 1' in table
  # Not swept, so read from the config.
  assert group['kernel_init_layers'] == 'dense'


def test_init_scale_groups_by_the_scaled_kernels_batch_norm_first(tmp_path):
  table, data = _claim(
      tmp_path, {'model.batch_norm': [False, True],
                 'model.kernel_init_layers': ['dense', 'conv'],
                 'model.kernel_init_scale': [10.0], 'seed': [0]},
      'init_scale', _util.tiny_config(), 'model.kernel_init_scale',
      'model.kernel_init_layers')
  groups = [(g['batch_norm'], g['kernel_init_layers']) for g in data['groups']]
  assert groups == [(True, 'conv'), (True, 'dense'), (False, 'conv'),
                    (False, 'dense')]
  losses = [g['first_epoch_loss'] for g in data['groups']]
  assert losses[0] != losses[1]  # The scaled kernels differ.
  assert table.index('| on | conv | x10 |') < table.index('| off | dense |')


def test_a_sweep_spec_without_an_analysis_is_refused(tmp_path):
  spec = {'axes': {'seed': [0]}, 'rows': 'seed', 'cols': 'seed',
          'metric': 'test_accuracy', 'analysis': 'astrology'}
  with pytest.raises(claims.ClaimError, match='one of convergence'):
    claims.analyze(_util.tiny_config(), spec, str(tmp_path))


def _hand_made_runs(tmp_path, summaries, analysis='init_scale'):
  """A claim's runs folder of one point per summary, written as a sweep
  writes it; the seed is the axis."""
  runs = tmp_path / 'runs'
  config = _util.tiny_config().to_dict()
  points = []
  for seed, summary in enumerate(summaries):
    folder = runs / f'seed={seed}'
    folder.mkdir(parents=True)
    (folder / 'config.json').write_text(json.dumps(config))
    (folder / 'summary.json').write_text(json.dumps(
        {'config': config, **summary}))
    (folder / 'metrics.jsonl').write_text(json.dumps(
        {'epoch': 1, 'train_loss': 0.5, 'val_accuracy': 0.8}) + '\n')
    points.append({'name': folder.name, 'values': {'seed': seed}})
  (runs / 'sweep.json').write_text(json.dumps({'points': points}))
  return {'axes': {'seed': list(range(len(summaries)))}, 'rows': 'seed',
          'cols': 'seed', 'metric': 'test_accuracy', 'analysis': analysis}


def test_a_non_finite_test_accuracy_is_a_divergence_as_in_the_report(
    tmp_path):
  """One rule for what counts as a result (records.metric_value): a NaN or
  infinite test accuracy is no number to average (it once showed as
  'nan ± 0.0000 (n=1)')."""
  spec = _hand_made_runs(tmp_path, [
      {'status': 'ok', 'test_accuracy': float('nan')},
      {'status': 'ok', 'test_accuracy': float('inf')},
      {'status': 'ok', 'test_accuracy': 0.75},
      {'test_accuracy': 0.25},  # Written before summaries had a status.
      {'status': 'diverged', 'diverged_epoch': 2}])
  table = claims.analyze(_util.tiny_config(), spec, str(tmp_path))
  (group,) = json.loads((tmp_path / 'results.json').read_text())['groups']
  assert group['diverged'] == 3
  assert group['test_accuracy'] == [0.75, 0.25]
  assert 'nan' not in table and '| 3 of 5 | 0.5000 ± 0.3536 (n=2) |' in table


@pytest.mark.parametrize('summary, words', [
    ({'status': 'ok', 'test_accuracy': '0.9'},
     "test_accuracy is '0.9', not a number"),
    ({'status': 'ok', 'test_accuracy': True},
     'test_accuracy is True, not a number'),
    ({'status': 'ok'}, 'lacks test_accuracy'),
    ({'status': 'finished', 'test_accuracy': 0.9},
     'status is finished; a run writes ok or diverged'),
])
def test_a_summary_that_no_run_writes_is_named_with_its_field(
    tmp_path, summary, words):
  spec = _hand_made_runs(tmp_path, [summary])
  path = tmp_path / 'runs' / 'seed=0' / 'summary.json'
  with pytest.raises(claims.ClaimError) as e:
    claims.analyze(_util.tiny_config(), spec, str(tmp_path))
  assert str(e.value) == f'{path}: {words}'



def _marked(steps):
  """A summary as experiments/relu_speed's runs have it: marks recorded at
  0.25 (this step) and 0.1 (never), no events."""
  return {'status': 'ok', 'test_accuracy': 0.9, 'num_train_examples': 32,
          'mark_window_steps': 20, 'train_error_marks': {
              '0.25': {'step': steps, 'epoch': 1, 'train_time_s': 1.5},
              '0.1': None}}


def test_runs_without_events_give_the_marks_their_summary_recorded(
    tmp_path):
  spec = _hand_made_runs(tmp_path, [_marked(3), _marked(4)], 'convergence')
  table = claims.analyze(_util.tiny_config(), dict(spec, levels=(0.25, 0.1)),
                         str(tmp_path))
  data = json.loads((tmp_path / 'results.json').read_text())
  (group,) = data['groups']
  assert group['0.25'] == {'steps': [3, 4], 'train_time_s': [1.5, 1.5]}
  assert group['0.1']['steps'] == [None, None]
  assert data['window_steps'] == 20
  assert '| on | relu | 4 ± 1 (n=2) |' in table
  # A level the summaries did not record cannot be read from them.
  with pytest.raises(marks.MarksError, match=r'seed=0 has no TensorBoard '
                     r'events .* records no mark at 0\.5;'):
    claims.analyze(_util.tiny_config(), dict(spec, levels=(0.5,)),
                   str(tmp_path))


@pytest.mark.parametrize('levels', [None, (), (0.25, 1.0), ('0.1',), (True,)])
def test_a_convergence_spec_without_levels_in_0_1_is_refused(tmp_path,
                                                             levels):
  spec = {'axes': {'seed': [0]}, 'rows': 'seed', 'cols': 'seed',
          'metric': 'test_accuracy', 'analysis': 'convergence',
          'levels': levels}
  with pytest.raises(claims.ClaimError,
                     match=r"spec's levels must be a tuple of training-error "
                           r'levels in \(0, 1\)'):
    claims.analyze(_util.tiny_config(), spec, str(tmp_path))
