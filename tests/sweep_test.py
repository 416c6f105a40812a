"""Sweeps: every point in its own folder, resumable, failures recorded."""

import json
import os
import random
import shutil
import sys
import time

import pytest
import tensorflow_datasets as tfds

from cnn_jax import input_pipeline
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


def test_a_value_may_set_several_fields_under_one_name(tmp_path):
  variant = {'name': 'strided', 'model.pooling': 'subsample',
             'model.conv_stride': 2, 'model.pool_window': 1,
             'model.pool_stride': 1}
  spec = {'axes': {'model.pooling': ['max', variant], 'seed': [0]},
          'rows': 'model.pooling', 'cols': 'seed',
          'metric': 'test_accuracy'}
  names = [sweep.point_name(p) for p in sweep.points(spec['axes'])]
  assert names == ['pooling=max,seed=0', 'pooling=strided,seed=0']
  _run(spec, tmp_path)
  config = _summary(tmp_path, 'pooling=strided,seed=0')['config']
  assert (config['model']['pooling'], config['model']['conv_stride']) == (
      'subsample', 2)
  with open(tmp_path / 'sweep.json') as f:
    listing = json.load(f)['points']
  assert [p['values']['model.pooling'] for p in listing] == ['max', 'strided']
  assert 'strided' in report.write_report(str(tmp_path))['markdown']
  unnamed = dict(spec, axes={'model.pooling': [{'model.pooling': 'avg'}]})
  with pytest.raises(sweep.SweepError, match='needs a "name"'):
    sweep.check_sweep(unnamed)


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


def test_diverged_point_is_recorded_and_the_sweep_goes_on(tmp_path):
  spec = dict(SWEEP, axes={'model.activation': ['relu'],
                           'learning_rate': [1e-3, 1e30]},
              cols='learning_rate')
  status = _run(spec, tmp_path)
  assert status == {'activation=relu,learning_rate=0.001': 'done',
                    'activation=relu,learning_rate=1e+30': 'diverged'}
  diverged = _summary(tmp_path, 'activation=relu,learning_rate=1e+30')
  assert diverged['status'] == 'diverged' and diverged['diverged_epoch'] == 1
  assert 'test_accuracy' not in diverged
  assert _summary(tmp_path, 'activation=relu,learning_rate=0.001')[
      'status'] == 'ok'
  # A rerun trains neither again.
  summary = tmp_path / 'activation=relu,learning_rate=1e+30' / 'summary.json'
  mtime = os.path.getmtime(summary)
  assert _run(spec, tmp_path) == status
  assert os.path.getmtime(summary) == mtime
  markdown = report.write_report(str(tmp_path))['markdown']
  assert 'diverged (1 of 1)' in markdown
  assert markdown.count('±') == 1  # The finished point's cell only.


def test_failed_point_is_reported_as_failed_not_as_a_number(tmp_path):
  spec = dict(SWEEP, axes={'model.activation': ['relu', 'tanh'],
                           'model.pooling': ['max']})
  _run(spec, tmp_path)
  # A point interrupted before its summary, whose checkpoint then got
  # corrupted: restoring it fails for real, and the sweep goes on.
  broken = tmp_path / 'activation=relu,pooling=max'
  os.remove(broken / 'summary.json')
  for root, _, files in os.walk(broken / 'checkpoints'):
    for name in files:
      with open(os.path.join(root, name), 'wb') as f:
        f.write(b'garbage')
  shutil.rmtree(tmp_path / 'activation=tanh,pooling=max')
  status = _run(spec, tmp_path)
  assert status == {'activation=relu,pooling=max': 'failed',
                    'activation=tanh,pooling=max': 'done'}
  assert os.path.exists(broken / 'error.txt')
  # A missing point, never run, also shows as such.
  shutil.rmtree(tmp_path / 'activation=tanh,pooling=max')
  markdown = report.write_report(str(tmp_path))['markdown']
  assert '1 failed' in markdown and '1 missing' in markdown
  assert '±' not in markdown
  # --start_over, as the point's error advises: it trains again.
  status = _run(spec, tmp_path, start_over=True)
  assert set(status.values()) == {'done'}
  assert not os.path.exists(broken / 'error.txt')


def test_rerun_with_other_overrides_is_refused_unless_started_over(tmp_path):
  spec = dict(SWEEP, axes={'model.activation': ['relu'],
                           'model.pooling': ['max']})
  _run(spec, tmp_path)
  point = tmp_path / 'activation=relu,pooling=max'
  before = _summary(tmp_path, point.name)
  longer = _util.tiny_config()
  longer.num_epochs = 2
  with tfds.testing.mock_data(num_examples=48):
    with pytest.raises(sweep.SweepError,
                       match=r'1 of 1 points were started with another '
                             r'config, e.g. activation=relu,pooling=max: '
                             r'num_epochs \(1 there, 2 now\); rerun'):
      sweep.run_sweep(longer, spec, str(tmp_path))
    assert _summary(tmp_path, point.name) == before  # Untouched.
    status = sweep.run_sweep(longer, spec, str(tmp_path), start_over=True)
  assert status == {point.name: 'done'}
  assert _summary(tmp_path, point.name)['epochs_completed'] == 2
  with open(point / 'metrics.jsonl') as f:
    assert [json.loads(l)['epoch'] for l in f] == [1, 2]  # From scratch.


BAD_SPECS = {
    'not_a_dict': ([1], 'get_sweep() must return a dict; got list'),
    'no_table': ({'axes': {'seed': [0]}},
                 'the sweep spec lacks rows, cols, metric'),
    'no_axes': (dict(SWEEP, axes={}), 'sweep axes must be a dict'),
    'empty_axis': (dict(SWEEP, axes={'model.activation': [], 'seed': [0]}),
                   'sweep axis model.activation must be a non-empty list of '
                   'values; got []'),
    'axis_not_a_list': (dict(SWEEP, axes={'model.activation': 'relu',
                                          'model.pooling': ['max']}),
                        'sweep axis model.activation must be a non-empty '
                        'list of values; got relu'),
    'rows_no_axis': (dict(SWEEP, rows='model.act'),
                     'sweep rows must be one of the axes (model.activation, '
                     'model.pooling, seed); got model.act'),
    'cols_no_axis': (dict(SWEEP, cols='lr'), 'sweep cols must be one of'),
    'unknown_metric': (dict(SWEEP, metric='accuracy'),
                       'sweep metric must be one of test_accuracy'),
    # The table's rows and columns are named by their values.
    'rows_of_lists': (dict(SWEEP, axes={'model.features': [[8, 16], [16]],
                                        'model.pooling': ['max']},
                           rows='model.features'),
                      'sweep rows model.features: [8, 16] is a list; rows '
                      'and cols need plain values or named variants'),
    'axis_not_a_name': (dict(SWEEP, axes={('seed',): [0]}),
                        "sweep axes must be named by dotted config fields; "
                        "got ('seed',)"),
}


@pytest.mark.parametrize('name', sorted(BAD_SPECS))
def test_bad_sweep_spec_is_refused_before_anything_runs(tmp_path, name):
  spec, words = BAD_SPECS[name]
  with pytest.raises(sweep.SweepError) as e:
    sweep.run_sweep(_util.tiny_config(), spec, str(tmp_path / 'sweep'))
  assert str(e.value).startswith(words), str(e.value)
  assert not (tmp_path / 'sweep').exists()


def test_misspelt_parent_and_wrong_type_are_refused():
  with pytest.raises(validation.ConfigError,
                     match=r'sweep axis modle.activation is not a config '
                           r'field \(did you mean model.activation\?\)'):
    sweep.point_config(_util.tiny_config(), {'modle.activation': 'tanh'})
  with pytest.raises(validation.ConfigError,
                     match='sweep axis model.batch_norm: 3 has the wrong '
                           'type'):
    sweep.point_config(_util.tiny_config(), {'model.batch_norm': 3})
  # Set whole, model would lose the fields the variant leaves out.
  with pytest.raises(validation.ConfigError,
                     match='sweep axis model is a group of fields; set each '
                           'by its dotted name, e.g. model.'):
    sweep.point_config(_util.tiny_config(), {
        'recipe': {'name': 'avg', 'model': {'pooling': 'avg'}}})


def test_a_plain_config_is_no_sweep(tmp_path):
  with pytest.raises(sweep.SweepError, match='has no get_sweep()'):
    sweep.load_sweep(f'{_util.ROOT}/configs/default.py')


def test_a_data_error_stops_the_sweep_before_it_writes(tmp_path):
  config = _util.tiny_config()
  config.data.data_dir = '/sys/tfds'  # Not writable, even for root.
  with tfds.testing.mock_data(num_examples=48):
    with pytest.raises(input_pipeline.DataError,
                       match='config.data.data_dir: cannot write in '
                             '/sys/tfds to prepare fashion_mnist'):
      sweep.run_sweep(config, SWEEP, str(tmp_path / 'sweep'))
  assert not (tmp_path / 'sweep').exists()


@pytest.fixture(scope='module')
def command_lines(tmp_path_factory):
  """The sweep command lines below, run in one process
  (_util.run_commands): {name: (exit status, stdout, stderr, workdir)}."""
  folder = tmp_path_factory.mktemp('command_lines')
  commands = {'dry_run': ('activation_pooling.py',
                          ['--dry_run', '--config.num_epochs=1']),
              'bad_override': ('batch_norm.py', ['--config.learning_rate=-1'])}
  results = _util.run_commands([
      ('cnn_jax.sweep', [f'--config={_util.ROOT}/configs/sweeps/{config}',
                         f'--workdir={folder / name}', *args],
       _util.ROOT, None) for name, (config, args) in commands.items()])
  return {name: (*result, folder / name)
          for name, result in zip(commands, results)}


def test_dry_run_lists_points_and_writes_nothing(command_lines):
  code, out, err, workdir = command_lines['dry_run']
  assert code == 0, err[-2000:]
  lines = out.splitlines()
  assert len(lines) == 3 * 4 * 3
  assert all(line.startswith('todo') for line in lines)
  assert 'activation=relu,pooling=gaussian,seed=2' in out
  assert not workdir.exists()


def test_bad_override_fails_before_any_point_runs(command_lines):
  code, _, err, workdir = command_lines['bad_override']
  assert code == 2
  assert err.strip().splitlines()[-1] == (
      'error: config.learning_rate must be a finite number > 0; got -1.0')
  assert not workdir.exists()


def test_points_that_share_a_program_train_together():
  """Seed, learning rate, weight decay and label smoothing are per-run
  values of one program; the activation is not."""
  base = _util.tiny_config()
  axes = dict(SWEEP['axes'], learning_rate=[1e-3, 3e-3],
              weight_decay=[0.0, 0.1], label_smoothing=[0.0, 0.1])
  configs = {sweep.point_name(p): sweep.point_config(base, p)
             for p in sweep.points(axes)}
  status = {n: 'todo' for n in configs}
  groups = sweep.program_groups(configs, status)
  assert [len(g) for g in groups] == [16, 16]
  assert [{configs[n].model.activation for n in g} for g in groups] == [
      {'relu'}, {'tanh'}]
  # With a target accuracy every run stops at its own epoch: none grouped.
  targeted = {n: sweep.point_config(base, p) for n, p in zip(
      configs, sweep.points(axes))}
  for config in targeted.values():
    config.unlock()
    config.target_test_accuracy = 0.5
  assert all(len(g) == 1 for g in sweep.program_groups(targeted, status))
  # A started point resumes alone.
  started = groups[1][3]
  status[started] = 'partial'
  assert sweep.program_groups(configs, status)[1:] == [
      [n for n in groups[1] if n != started], [started]]


def test_a_point_is_partial_once_it_has_a_checkpoint(tmp_path):
  checkpoints = tmp_path / 'checkpoints'
  assert sweep._status(str(tmp_path)) == 'todo'
  # Stopped before its first checkpoint, or killed while orbax wrote it.
  (checkpoints / '1.orbax-checkpoint-tmp-3').mkdir(parents=True)
  assert sweep._status(str(tmp_path)) == 'todo'
  (checkpoints / '1').mkdir()
  assert sweep._status(str(tmp_path)) == 'partial'


@pytest.mark.slow
def test_a_sweep_killed_at_a_random_moment_ends_as_if_never_killed(
    tmp_path, real_data_dir):
  """kill -9 of the sweep process, a rerun: every point once, same table.

  The two points differ in seed only, so they share their programs: one
  compilation. Every epoch is checkpointed, so that a point killed in its
  second epoch resumes.
  """
  data = _util.tiny_config().data
  data.update(data_dir=real_data_dir, manual_dir=_util.MANUAL_DIR, cache=True)
  input_pipeline.load_splits(data)
  spec = tmp_path / 'two_points.py'
  spec.write_text(
      'from configs import default\n'
      'get_config = default.get_config\n'
      'def get_sweep():\n'
      '  return {"axes": {"model.activation": ["relu"], "seed": [0, 1]},\n'
      '          "rows": "model.activation", "cols": "seed",\n'
      '          "metric": "test_accuracy"}\n')
  command = lambda workdir: [
      sys.executable, '-m', 'cnn_jax.sweep', f'--config={spec}',
      f'--workdir={workdir}', '--config.num_epochs=2',
      '--config.batch_size=50', '--config.data.num_train_examples=300',
      '--config.data.num_validation_examples=500',
      '--config.checkpoint_interval_s=0',
      f'--config.data.data_dir={real_data_dir}']
  straight, killed = tmp_path / 'straight' / 'runs', tmp_path / 'killed' / 'runs'
  # When the uninterrupted sweep's first epoch ends, and the sweep itself.
  first_epoch = []

  def watch(seconds):
    if not first_epoch and list(straight.glob('*/metrics.jsonl')):
      first_epoch.append(seconds)
    return False

  t0 = time.time()
  assert not _util.kill_when(command(straight), watch)
  delay = random.uniform(first_epoch[0], time.time() - t0)
  print(f'killed after {delay:.2f} s')
  _util.kill_when(command(killed), lambda s: s > delay)
  assert not _util.kill_when(command(killed), lambda s: False)
  names = sorted(n for n in os.listdir(straight) if '=' in n)
  assert len(names) == 2
  assert names == sorted(n for n in os.listdir(killed) if '=' in n)
  for name in names:
    with open(straight / name / 'metrics.jsonl') as f:
      assert len(f.readlines()) == 2  # Every epoch once.
    with open(killed / name / 'metrics.jsonl') as f:
      assert len(f.readlines()) == 2
  assert (report.write_report(str(killed))['markdown'] ==
          report.write_report(str(straight))['markdown'])


def _dry_run(spec, workdir, capsys, base=None):
  """The (status, folder) lines that --dry_run prints."""
  sweep.run_sweep(base or _util.tiny_config(), spec, str(workdir),
                  dry_run=True)
  return [line.split()[:2] for line in capsys.readouterr().out.splitlines()]


def test_point_folders_stay_inside_the_sweep_folder_whatever_the_values(
    tmp_path, capsys):
  escape = {'name': 'x/../../../escaped', 'model.pooling': 'avg'}
  spec = {'axes': {'data.data_dir': ['data', str(tmp_path / 'tfds' / '..'),
                                     '../..', '..', 'a,b=c', 'naïve ü',
                                     '%2F', 'd' * 300],
                   'model.pooling': ['max', escape]},
          'rows': 'model.pooling', 'cols': 'data.data_dir',
          'metric': 'test_accuracy'}
  workdir = tmp_path / 'a' / 'sweep'
  lines = _dry_run(spec, workdir, capsys)
  assert len(lines) == 16 and all(s == 'todo' for s, _ in lines)
  folders = [folder for _, folder in lines]
  assert len(set(folders)) == 16
  for folder in folders:
    path = os.path.realpath(os.path.join(workdir, folder))
    assert os.path.dirname(path) == os.path.realpath(workdir), folder
    assert len(folder.encode()) < 200, folder
  # A safe name is kept as it was: sweep folders started earlier resume.
  assert folders[:2] == ['data_dir=data,pooling=max',
                         'data_dir=data,pooling=x%2F..%2F..%2F..%2Fescaped']
  assert 'data_dir=a%2Cb%3Dc,pooling=max' in folders
  assert not (tmp_path / 'a').exists()

  # A point folder that is a link to elsewhere is refused, even in a dry run.
  workdir.mkdir(parents=True)
  (tmp_path / 'elsewhere').mkdir()
  os.symlink(tmp_path / 'elsewhere', workdir / 'data_dir=data,pooling=max')
  with pytest.raises(sweep.SweepError,
                     match=r'sweep point data_dir=data,pooling=max: its '
                           r'folder .* leads to .*elsewhere, outside'):
    sweep.run_sweep(_util.tiny_config(), spec, str(workdir), dry_run=True)
  assert os.listdir(tmp_path / 'elsewhere') == []

  # Trained: the run stays in its folder; sweep.json names both.
  spec = dict(spec, axes={'model.pooling': [escape], 'seed': [0]},
              cols='seed')
  workdir = tmp_path / 'b' / 'sweep'
  folder = 'pooling=x%2F..%2F..%2F..%2Fescaped,seed=0'
  assert _run(spec, workdir) == {folder: 'done'}
  assert sorted(os.listdir(tmp_path / 'b')) == ['sweep']
  assert sorted(os.listdir(workdir)) == ['.lock', folder, 'sweep.json']
  with open(workdir / 'sweep.json') as f:
    [point] = json.load(f)['points']
  assert point['name'] == folder
  assert point['readable_name'] == 'pooling=x/../../../escaped,seed=0'
  assert _summary(workdir, folder)['config']['model']['pooling'] == 'avg'


def test_points_that_are_one_are_refused_before_anything_runs(tmp_path,
                                                              capsys):
  same_name = {'model.pooling': [{'name': 'v', 'model.pooling': 'avg'},
                                 {'name': 'v', 'model.pooling': 'l2'}],
               'seed': [0]}
  same_config = {'weight_decay': [0, 0.0], 'seed': [0]}
  same_seed = {'seed': [0, 1, 0]}
  workdir = tmp_path / 'sweep'
  cases = [
      (same_name, "sweep axis model.pooling: {'name': 'v', 'model.pooling': "
                  "'avg'} and {'name': 'v', 'model.pooling': 'l2'} are both "
                  "named v, which names their points' folders; give them "
                  "distinct names"),
      (same_config, 'sweep points weight_decay=0,seed=0 and '
                    'weight_decay=0.0,seed=0 train the same config; '
                    'drop one of them'),
      (same_seed, 'sweep axis seed lists 0 twice'),
  ]
  for axes, message in cases:
    spec = dict(SWEEP, axes=axes, rows='seed', cols='seed')
    for dry_run in (True, False):
      with pytest.raises(sweep.SweepError) as e:
        sweep.run_sweep(_util.tiny_config(), spec, str(workdir),
                        dry_run=dry_run)
      assert str(e.value) == message
      assert capsys.readouterr().out == ''
      assert not workdir.exists()


def test_a_failure_that_cannot_be_recorded_does_not_stop_the_sweep(
    tmp_path, caplog):
  spec = dict(SWEEP, axes={'model.activation': ['relu', 'tanh'],
                           'model.pooling': ['max']})
  # A point that fails for real (its checkpoint is garbage), whose error.txt
  # cannot be written: a folder holds its place.
  broken = tmp_path / 'activation=relu,pooling=max'
  (broken / 'checkpoints' / '1').mkdir(parents=True)
  (broken / 'checkpoints' / '1' / 'state').write_bytes(b'garbage')
  (broken / 'error.txt').mkdir()
  status = _run(spec, tmp_path)
  assert status == {'activation=relu,pooling=max': 'failed',
                    'activation=tanh,pooling=max': 'done'}
  assert any('error.txt' in r.getMessage() and r.levelname == 'ERROR'
             for r in caplog.records)
  assert _summary(tmp_path, 'activation=tanh,pooling=max')['status'] == 'ok'



def test_a_failing_get_sweep_and_specs_no_table_can_use_are_one_error(
    tmp_path):
  """A get_sweep() that raises, rows that are no axis name, and a spec
  value sweep.json cannot record are refused before anything is written."""
  path = tmp_path / 'raises.py'
  path.write_text('from configs import default\n'
                  'get_config = default.get_config\n'
                  'def get_sweep():\n  raise RuntimeError("boom")\n')
  with pytest.raises(sweep.SweepError,
                     match='get_sweep\\(\\) raised RuntimeError: boom'):
    sweep.load_sweep(str(path))
  spec = {'axes': {'seed': [0]}, 'rows': 'seed', 'cols': 'seed',
          'metric': 'test_accuracy'}
  with pytest.raises(sweep.SweepError, match='rows must be one of the axes'):
    sweep.check_sweep(dict(spec, rows=['seed']))
  with pytest.raises(sweep.SweepError, match='JSON values only'):
    sweep.check_sweep(dict(spec, extra={1, 2}))
  with pytest.raises(sweep.SweepError, match='JSON values only'):
    sweep.run_sweep(_util.tiny_config(), dict(spec, extra={1, 2}),
                    str(tmp_path / 'sweep'))
  assert not (tmp_path / 'sweep').exists()


def test_a_sweep_and_a_run_never_share_a_folder(tmp_path):
  run_dir = tmp_path / 'run'
  run_dir.mkdir()
  (run_dir / 'config.json').write_text('{}')
  spec = {'axes': {'seed': [0]}, 'rows': 'seed', 'cols': 'seed',
          'metric': 'test_accuracy'}
  with pytest.raises(sweep.SweepError, match='holds a training run'):
    sweep.run_sweep(_util.tiny_config(), spec, str(run_dir), dry_run=True)
  assert os.listdir(run_dir) == ['config.json']
