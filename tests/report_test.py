"""The report on sweep folders built by hand: bad files, divergence, the CLI.

Hand-written summary.json and metrics.jsonl files stand in for trained runs,
so each case costs milliseconds; sweep_test covers the report on a real one.
"""

import json
import os
import subprocess
import sys

import pytest

from cnn_jax import report
import _util

SWEEP = {
    'axes': {'model.activation': ['relu', 'tanh'], 'model.pooling': ['max'],
             'seed': [0, 1]},
    'rows': 'model.activation', 'cols': 'model.pooling',
    'metric': 'test_accuracy',
}
# Test accuracy by (activation, seed): relu's mean is the best.
ACCURACY = {('relu', 0): 0.90, ('relu', 1): 0.92, ('tanh', 0): 0.80,
            ('tanh', 1): 0.82}
OUTPUTS = ('table.md', 'table.tex', 'table.csv', 'heatmap.png',
           'learning_curves.png')


def _name(activation, seed):
  return f'activation={activation},pooling=max,seed={seed}'


def _make_sweep(root, diverged=()):
  """root/runs, a finished sweep of the four points; returns its path.

  Summaries have no status, as written before divergence was recorded,
  except the points in `diverged`.
  """
  workdir = root / 'runs'
  workdir.mkdir()
  points = []
  for (activation, seed), accuracy in ACCURACY.items():
    values = {'model.activation': activation, 'model.pooling': 'max',
              'seed': seed}
    points.append({'name': _name(activation, seed), 'values': values})
    point_dir = workdir / _name(activation, seed)
    point_dir.mkdir()
    config = {'model': {'activation': activation, 'pooling': 'max'},
              'seed': seed}
    if (activation, seed) in diverged:
      summary = {'status': 'diverged', 'diverged_epoch': 2, 'config': config}
    else:
      summary = {'config': config, 'epochs_completed': 2,
                 'test_accuracy': accuracy, 'test_loss': 1 - accuracy,
                 'best_val_accuracy': accuracy, 'final_val_accuracy': accuracy}
    (point_dir / 'summary.json').write_text(json.dumps(summary))
    (point_dir / 'metrics.jsonl').write_text(
        ''.join(json.dumps({'epoch': e, 'val_accuracy': accuracy - 0.1 / e})
                + '\n' for e in (1, 2)))
  (workdir / 'sweep.json').write_text(json.dumps(dict(SWEEP, points=points)))
  return workdir


def _row(markdown, activation):
  return next(line for line in markdown.splitlines()
              if line.startswith(f'| {activation} |'))


def _assert_one_line(message):
  assert '\n' not in message and '\\n' not in message
  assert "'" not in message and '"' not in message


def test_finished_sweep_writes_every_output_and_marks_the_best(tmp_path):
  tables = report.write_report(str(_make_sweep(tmp_path)))
  assert _row(tables['markdown'], 'relu').count('**') == 2
  assert '**' not in _row(tables['markdown'], 'tanh')
  assert '0.9100 ± 0.0141 (n=2)' in tables['markdown']
  assert sorted(os.listdir(tmp_path)) == sorted(OUTPUTS + ('runs',))


def test_lower_is_better_metric_marks_the_smallest_mean(tmp_path):
  workdir = _make_sweep(tmp_path)
  spec = json.loads((workdir / 'sweep.json').read_text())
  (workdir / 'sweep.json').write_text(
      json.dumps(dict(spec, metric='test_loss')))
  markdown = report.table(report.collect(str(workdir)), 'markdown')
  assert '**' in _row(markdown, 'relu') and '**' not in _row(markdown, 'tanh')


@pytest.mark.parametrize('text, fault', [
    (None, 'does not exist; --workdir must be a sweep folder'),
    ('', 'is unreadable (empty)'),
    ('{"axes": {"seed": [0, 1]}, "rows": "se', 'is unreadable (not valid JSON: '
     'Unterminated string starting at line 1 column 36)'),
    ('[1, 2]', 'is not a JSON object'),
    ('{"axes": {}, "rows": "seed"}', 'lacks cols, metric, points'),
])
def test_bad_sweep_json_is_an_error_naming_the_file(tmp_path, text, fault):
  workdir = _make_sweep(tmp_path)
  path = workdir / 'sweep.json'
  if text is None:
    path.unlink()
  else:
    path.write_text(text)
  with pytest.raises(report.ReportError) as e:
    report.write_report(str(workdir))
  assert str(e.value).startswith(f'{path} {fault}')
  _assert_one_line(str(e.value))
  assert sorted(os.listdir(tmp_path)) == ['runs']


@pytest.mark.parametrize('field, value, allowed', [
    ('rows', 'model.activaton', 'the axes are model.activation, '
     'model.pooling, seed'),
    ('cols', 'model.pool', 'the axes are model.activation, model.pooling, '
     'seed'),
    ('metric', 'accuracy', 'the metrics are ' + ', '.join(report.METRICS)),
])
def test_rows_cols_or_metric_naming_nothing_is_an_error(tmp_path, field,
                                                        value, allowed):
  workdir = _make_sweep(tmp_path)
  spec = json.loads((workdir / 'sweep.json').read_text())
  (workdir / 'sweep.json').write_text(json.dumps(dict(spec, **{field: value})))
  with pytest.raises(report.ReportError) as e:
    report.collect(str(workdir))
  assert f': {field} is {value}, which is no ' in str(e.value)
  assert str(e.value).endswith(allowed)
  _assert_one_line(str(e.value))


def test_sweep_of_no_points_is_an_error_and_writes_nothing(tmp_path):
  workdir = _make_sweep(tmp_path)
  spec = json.loads((workdir / 'sweep.json').read_text())
  (workdir / 'sweep.json').write_text(json.dumps(dict(spec, points=[])))
  with pytest.raises(report.ReportError, match='lists no points'):
    report.write_report(str(workdir))
  assert sorted(os.listdir(tmp_path)) == ['runs']


@pytest.mark.parametrize('text, reason', [
    ('', 'empty'),
    ('{"config": {"model": {"activation": "relu", "pool',
     'not valid JSON: Unterminated string'),
    ('{"config": {"model": {"activation": "relu", "pooling": "max"}}}',
     'lacks test_accuracy'),
])
def test_bad_summary_warns_and_counts_the_point_unreadable(tmp_path, capsys,
                                                           text, reason):
  workdir = _make_sweep(tmp_path)
  path = workdir / _name('relu', 1) / 'summary.json'
  path.write_text(text)
  markdown = report.table(report.collect(str(workdir)), 'markdown')
  warnings = capsys.readouterr().err.splitlines()
  assert len(warnings) == 1
  assert warnings[0].startswith(f'warning: {path} is unreadable ({reason}')
  assert warnings[0].endswith('); point counted as unreadable')
  assert _row(markdown, 'relu').endswith('0.9000 ± 0.0000 (n=1)**; '
                                         '1 unreadable |')
  assert '(n=2)' in _row(markdown, 'tanh')
  assert 'unreadable' not in _row(markdown, 'tanh')


@pytest.mark.parametrize('text, reason', [
    ('', 'empty'),
    ('{"epoch": 1, "val_accuracy": 0.8}\n{"epoch": 2, "val_acc',
     'line 2 is not valid JSON'),
])
def test_bad_metrics_drops_only_the_learning_curve(tmp_path, capsys, text,
                                                   reason):
  workdir = _make_sweep(tmp_path)
  path = workdir / _name('tanh', 0) / 'metrics.jsonl'
  path.write_text(text)
  data = report.collect(str(workdir))
  warnings = capsys.readouterr().err.splitlines()
  assert len(warnings) == 1
  assert warnings[0].startswith(f'warning: {path} is unreadable ({reason}')
  cell = data['cells'][('tanh', 'max')]
  assert cell['values'] == [0.80, 0.82] and len(cell['curves']) == 1
  assert 'unreadable' not in report.table(data, 'markdown')


def test_diverged_seed_shows_no_number_and_is_never_best(tmp_path,
                                                         monkeypatch):
  import matplotlib.axes  # pylint: disable=g-import-not-at-top
  texts = []
  draw_text = matplotlib.axes.Axes.text
  def text(self, x, y, s, *args, **kwargs):
    texts.append(s)
    return draw_text(self, x, y, s, *args, **kwargs)
  monkeypatch.setattr(matplotlib.axes.Axes, 'text', text)
  # relu's surviving seed alone would be the best number in the table.
  tables = report.write_report(
      str(_make_sweep(tmp_path, diverged=[('relu', 0)])))
  assert texts == ['diverged', '0.8100']  # The heat map's two cells.
  relu = _row(tables['markdown'], 'relu')
  assert 'diverged (1 of 2)' in relu
  assert '0.92' not in relu and '±' not in relu and '**' not in relu
  assert '**0.8100 ± 0.0141 (n=2)**' in _row(tables['markdown'], 'tanh')
  assert '"relu","diverged (1 of 2)"' in tables['csv']
  assert 'relu & diverged (1 of 2) \\\\' in tables['latex']


def test_failure_while_writing_leaves_no_output(tmp_path, monkeypatch):
  def broken_figures(*args, **kwargs):
    raise OSError(28, 'No space left on device')
  monkeypatch.setattr(report, 'figures', broken_figures)
  with pytest.raises(report.ReportError,
                     match=r'cannot write the report into .* \(No space'):
    report.write_report(str(_make_sweep(tmp_path)))
  assert sorted(os.listdir(tmp_path)) == ['runs']


def test_cli_on_corrupt_sweep_json_is_one_error_line(tmp_path):
  workdir = _make_sweep(tmp_path)
  (workdir / 'sweep.json').write_text('{"axes": ')
  # --workdir=~/runs, with HOME at tmp_path: the ~ must be expanded.
  proc = subprocess.run(
      [sys.executable, '-m', 'cnn_jax.report', '--workdir=~/runs'],
      cwd=_util.ROOT, capture_output=True, text=True, timeout=120,
      env=dict(os.environ, HOME=str(tmp_path)))
  assert proc.returncode == 2
  assert 'Traceback' not in proc.stderr
  errors = [line for line in proc.stderr.splitlines()
            if line.startswith('error: ')]
  assert errors == [f'error: {workdir}/sweep.json is unreadable (not valid '
                    'JSON: Expecting value at line 1 column 10)']
  assert sorted(os.listdir(tmp_path)) == ['runs']


def _write_points(workdir, spec, points):
  """A sweep folder of hand-written points: (listing, config, accuracy)."""
  workdir.mkdir()
  for listing, config, accuracy in points:
    point_dir = workdir / listing['name']
    point_dir.mkdir(exist_ok=True)
    (point_dir / 'summary.json').write_text(json.dumps(
        {'status': 'ok', 'config': config, 'test_accuracy': accuracy}))
  (workdir / 'sweep.json').write_text(json.dumps(
      dict(spec, points=[listing for listing, _, _ in points])))
  return workdir


def test_variant_rows_show_their_runs_numbers(tmp_path, capsys):
  """A row that is a variant (several fields under one name) is read by
  the fields it sets, not by its name."""
  spec = {'axes': {'recipe': ['baseline', 'strided'], 'seed': [0]},
          'rows': 'recipe', 'cols': 'seed', 'metric': 'test_accuracy'}
  points = []
  for recipe, pooling, stride, accuracy in [('baseline', 'max', 1, 0.9),
                                            ('strided', 'subsample', 2, 0.8)]:
    overrides = {'model.pooling': pooling, 'model.conv_stride': stride,
                 'seed': 0}
    config = {'model': {'pooling': pooling, 'conv_stride': stride},
              'seed': 0}
    points.append(({'name': f'recipe={recipe},seed=0', 'overrides': overrides,
                    'values': {'recipe': recipe, 'seed': 0}}, config,
                   accuracy))
  markdown = report.table(report.collect(str(
      _write_points(tmp_path / 'runs', spec, points))), 'markdown')
  assert capsys.readouterr().err == ''
  assert _row(markdown, 'baseline') == (
      '| baseline | **0.9000 ± 0.0000 (n=1)** |')
  assert _row(markdown, 'strided') == '| strided | 0.8000 ± 0.0000 (n=1) |'
  # A run whose config is not what its point sets is still no number.
  points[1][1]['model']['conv_stride'] = 1
  markdown = report.table(report.collect(str(
      _write_points(tmp_path / 'other', spec, points))), 'markdown')
  assert _row(markdown, 'strided') == '| strided | 1 unreadable |'
  assert ('its config has model.conv_stride=1, not 2 as sweep.json sets'
          in capsys.readouterr().err)


def test_a_folder_listed_for_two_points_counts_once(tmp_path, capsys):
  """Two variants of one name shared a folder before such sweeps were
  refused: the run there is one run."""
  workdir = _make_sweep(tmp_path)
  spec = json.loads((workdir / 'sweep.json').read_text())
  spec['points'][1]['name'] = spec['points'][0]['name']
  (workdir / 'sweep.json').write_text(json.dumps(spec))
  markdown = report.table(report.collect(str(workdir)), 'markdown')
  assert _row(markdown, 'relu') == '| relu | **0.9000 ± 0.0000 (n=1)** |'
  assert capsys.readouterr().err.strip() == (
      f'warning: {workdir}/sweep.json lists the folder {_name("relu", 0)} '
      f'for 2 points; its run is counted once')
  # A folder that is not one name inside the sweep folder is refused.
  for folder in ('../runs2', '..', ''):
    spec['points'][0]['name'] = folder
    (workdir / 'sweep.json').write_text(json.dumps(spec))
    with pytest.raises(report.ReportError,
                       match=r'sweep.json: point 0 names the folder .*, '
                             r'which is not one folder inside'):
      report.collect(str(workdir))
