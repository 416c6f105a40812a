"""The train step, its multi-device equivalence, and whole runs with resume."""

import json
import os
import re
import shutil

import chex
from flax import jax_utils
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import plugin_data_pb2

from cnn_jax import input_pipeline
from cnn_jax import models
from cnn_jax import monitor
from cnn_jax import parallel
from cnn_jax import run as run_lib
from cnn_jax import train
from cnn_jax import validation
import _util


def _mock_data():
  """TFDS's random data for the tests that train through the pipeline.

  Imported here, not at the top, so that this file's device-independent
  tests collect on a GPU machine without TensorFlow (scripts/gpu_check.sh).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.testing.mock_data(num_examples=48)


def _state(model, lr=1e-3):
  return train.create_train_state(jax.random.key(0), model, optax.adam(lr))


def _sgd_state(model, lr=0.1):
  """SGD instead of Adam, for comparisons to float tolerance.

  The conv biases feed BatchNorm, which removes any shift, so their gradient
  is zero but for float noise; Adam's normalisation turns that noise into
  full +-lr steps of either sign. SGD keeps it at noise level.
  """
  return train.create_train_state(jax.random.key(0), model, optax.sgd(lr))


def _batch(n, seed=0):
  rng = np.random.RandomState(seed)
  return {'image': rng.rand(n, 28, 28, 1).astype(np.float32),
          'label': rng.randint(0, 10, n).astype(np.int32)}


def _split(batch, devices):
  return jax.tree.map(lambda x: x.reshape((devices, -1) + x.shape[1:]), batch)


def test_loss_falls_on_a_fixed_batch():
  state = jax_utils.replicate(_state(models._TinyCNN(), lr=1e-2))
  batch = _split(_batch(16), 2)
  p_step = jax.pmap(train.train_step, axis_name=train.AXIS)
  losses = []
  for _ in range(30):
    state, metrics = p_step(state, batch)
    losses.append(float(metrics['loss'][0]))
  assert losses[-1] < 0.3 * losses[0], losses


def test_two_devices_equal_one_device_with_the_same_global_batch():
  assert jax.local_device_count() == 2, 'conftest forces two CPU devices'
  state = _sgd_state(models.CNN())
  batch = _batch(8)
  one = jax.pmap(train.train_step, axis_name=train.AXIS,
                 devices=jax.local_devices()[:1])
  two = jax.pmap(train.train_step, axis_name=train.AXIS)
  s1, m1 = one(jax_utils.replicate(state, jax.local_devices()[:1]),
               _split(batch, 1))
  s2, m2 = two(jax_utils.replicate(state), _split(batch, 2))
  # Replicas agree with each other after the step.
  chex.assert_trees_all_close(jax.tree.map(lambda x: x[0], s2.params),
                              jax.tree.map(lambda x: x[1], s2.params))
  first = lambda tree: jax.tree.map(lambda x: np.asarray(x)[0], tree)
  for field in ('params', 'batch_stats'):
    chex.assert_trees_all_close(first(getattr(s1, field)),
                                first(getattr(s2, field)),
                                atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(m1['loss'][0], m2['loss'][0], rtol=1e-5)


def test_zero_weight_decay_is_plain_adam():
  config = _util.tiny_config()
  config.learning_rate, config.lr_schedule = 1e-2, 'constant'
  config.weight_decay = 0.0
  params = {'w': jnp.ones((3, 3)), 'b': jnp.ones(3)}
  grads = {'w': jnp.full((3, 3), 0.5), 'b': jnp.full(3, -2.0)}
  ours = train.create_optimizer(config, steps_per_epoch=10)
  adam = optax.adam(1e-2)
  u1, _ = ours.update(grads, ours.init(params), params)
  u2, _ = adam.update(grads, adam.init(params), params)
  chex.assert_trees_all_close(u1, u2)
  config.weight_decay = 0.1
  decayed = train.create_optimizer(config, steps_per_epoch=10)
  u3, _ = decayed.update(grads, decayed.init(params), params)
  assert not jnp.allclose(u3['w'], u2['w'])  # Kernels decay...
  chex.assert_trees_all_close(u3['b'], u2['b'])  # ...biases do not.


def test_the_seeds_of_one_model_share_one_init_program():
  # Unusual widths, so that no earlier test has compiled an op of these
  # shapes: the optimizer's init, run op by op, would lower programs here.
  model, tx = models.CNN(features=(3, 5)), optax.adam(0.1)
  keys = [jax.random.key(k) for k in range(3)]
  with _util.lowered_programs() as lowered:
    states = [train.create_train_state(key, model, tx) for key in keys]
  assert lowered == ['jit(_init_variables)'], lowered
  kernels = [s.params['conv1']['kernel'] for s in states]
  assert not np.allclose(kernels[0], kernels[1])  # Each seed its own draw.
  assert jax.tree.map(np.shape, states[0].opt_state) == jax.tree.map(
      np.shape, tx.init(states[0].params))


def test_a_runs_keys_are_one_program_and_the_seeds_own_draw():
  with _util.lowered_programs() as lowered:
    keys = [train._keys(s) for s in (0, 1, 2**31 - 1)]  # pylint: disable=protected-access
  assert lowered.count('jit(_keys)') <= 1, lowered  # 0: compiled earlier.
  assert all(p == 'jit(_keys)' for p in lowered), lowered
  for seed, pair in zip((0, 1, 2**31 - 1), keys):
    eager = jax.random.split(jax.random.key(seed))
    for ours, theirs in zip(pair, eager):  # What every result was drawn from.
      np.testing.assert_array_equal(jax.random.key_data(ours),
                                    jax.random.key_data(theirs))


def test_validation_and_test_share_one_evaluation_program():
  """Splits of 30 and 70 examples, padded to one shape, lower one program,
  and each gives the totals of its own examples, as evaluated unpadded."""
  par = parallel.create('pmap')
  state = par.replicate(train.stack([_sgd_state(models.CNN())]))
  evaluate = train.compile_evaluate(par)
  rng = np.random.RandomState(0)
  splits = [{'image': rng.randint(0, 256, (n, 28, 28, 1)).astype(np.uint8),
             'label': rng.randint(0, 10, n).astype(np.int32)}
            for n in (30, 70)]

  def totals(split, steps=None):
    data = input_pipeline.shard_for_eval(split, 10, 2, steps=steps)
    n = input_pipeline.eval_steps(split, 10)
    return par.get(evaluate(state, par.shard(data),
                            par.replicate(np.int32(n))))

  with _util.lowered_programs() as lowered:
    padded = [totals(split, steps=7) for split in splits]
  assert len(lowered) == 1, lowered
  for split, got in zip(splits, padded):
    want = totals(split)  # Its own shape: 3 or 7 steps.
    assert got['count'][0] == split['label'].shape[0]
    assert got['correct'][0] == want['correct'][0]
    np.testing.assert_allclose(got['loss'], want['loss'], rtol=1e-6)


def test_eval_step_ignores_masked_examples():
  state = _state(models.CNN(bn_axis_name=None))
  batch = _batch(4)
  full = train.eval_step(state, dict(batch, mask=np.ones(4, np.float32)))
  half = train.eval_step(state, dict(batch, mask=np.array([1, 1, 0, 0],
                                                          np.float32)))
  assert half['count'] == 2 and full['count'] == 4
  first = train.eval_step(state, {k: v[:2] for k, v in batch.items()}
                          | {'mask': np.ones(2, np.float32)})
  np.testing.assert_allclose(half['loss'], first['loss'], rtol=1e-6)


def _run(config, workdir, **kwargs):
  with _mock_data():
    return train.train_and_evaluate(config, workdir, **kwargs)


def _epoch_records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  timing = ('epoch_time_s', 'images_per_sec')
  return [{k: v for k, v in r.items() if k not in timing} for r in records]


def _check_step_losses(workdir, steps_per_epoch):
  """Every step's loss, at its global step; each epoch's mean is the
  epoch's train_loss in metrics.jsonl."""
  records = _epoch_records(workdir)
  losses = _util.tensorboard_scalars(workdir, 'train/loss')
  assert [step for step, _ in losses] == list(
      range(1, len(records) * steps_per_epoch + 1))
  values = np.array([v for _, v in losses]).reshape(len(records), -1)
  np.testing.assert_allclose(values.mean(1),
                             [r['train_loss'] for r in records], rtol=1e-5)


def test_train_and_evaluate_writes_summary_and_metrics(tmp_path, capfd):
  config = _util.tiny_config()
  summary = _run(config, str(tmp_path))
  with open(tmp_path / 'summary.json') as f:
    assert json.load(f) == json.loads(json.dumps(summary))
  for key in ('test_accuracy', 'test_loss', 'best_val_accuracy',
              'epochs_completed', 'num_params', 'num_devices',
              'train_images_per_sec', 'wall_time_s', 'config', 'versions'):
    assert key in summary, key
  assert summary['status'] == 'ok'
  # 'auto' on a CPU: the CPU-tuned layers and the Python loop.
  assert (summary['layers'], summary['epoch_loop']) == ('cpu', 'python')
  assert summary['epochs_completed'] == 1
  assert summary['num_devices'] == 2
  assert summary['num_params'] == 29_034
  assert 0.0 <= summary['test_accuracy'] <= 1.0
  assert summary['config']['learning_rate'] == config.learning_rate
  assert set(summary['versions']) >= {'jax', 'flax', 'optax', 'tfds'}
  # The tests run in a checkout: a full hash, '-dirty' while it is edited.
  assert re.search(r'[0-9a-f]{40}(-dirty)?$', summary['git_commit'])
  records = _epoch_records(str(tmp_path))
  assert len(records) == 1

  # TensorBoard: 32 examples in batches of 8 are 4 steps.
  _check_step_losses(tmp_path, 4)
  assert _util.tensorboard_scalars(tmp_path, 'train/learning_rate')[0] == (
      1, pytest.approx(config.learning_rate))
  assert _util.tensorboard_scalars(tmp_path, 'epoch/val_accuracy') == [
      (4, pytest.approx(records[0]['val_accuracy']))]
  assert _util.tensorboard_scalars(tmp_path, 'test/accuracy') == [
      (4, pytest.approx(summary['test_accuracy']))]
  hparams = _util.tensorboard_events(tmp_path).PluginTagToContent('hparams')
  start = plugin_data_pb2.HParamsPluginData.FromString(
      hparams['_hparams_/session_start_info']).session_start_info
  assert start.hparams['model.pooling'].string_value == 'max'
  assert start.hparams['batch_size'].number_value == 8
  # The experiment: every hyperparameter with its type, and the metrics.
  experiment = plugin_data_pb2.HParamsPluginData.FromString(
      hparams['_hparams_/experiment']).experiment
  types = {h.name: api_pb2.DataType.Name(h.type)
           for h in experiment.hparam_infos}
  assert set(types) == set(start.hparams)
  assert types['model.pooling'] == 'DATA_TYPE_STRING'
  assert types['batch_size'] == 'DATA_TYPE_FLOAT64'
  assert types['model.batch_norm'] == 'DATA_TYPE_BOOL'
  assert [m.name.tag for m in experiment.metric_infos] == list(
      monitor.HPARAM_METRICS)
  # Not a terminal: no progress bar, whose redraws would fill a CI log.
  assert '\r' not in capfd.readouterr().err


def test_the_scanned_epoch_writes_every_steps_loss_to_tensorboard(tmp_path):
  config = _util.tiny_config()
  config.epoch_loop, config.num_epochs = 'scan', 2
  summary = _run(config, str(tmp_path))
  assert summary['epoch_loop'] == 'scan'
  _check_step_losses(tmp_path, 4)


def test_on_a_terminal_each_epoch_shows_a_progress_bar(tmp_path):
  config = _util.tiny_config()
  config.epoch_loop, config.num_epochs = 'python', 2
  shown = _util.on_a_terminal(lambda: _run(config, str(tmp_path)))
  # (How the bar counts steps: monitor_test.py.)
  for epoch in (1, 2):
    assert re.search(rf'epoch {epoch}/2: +\d+%.*\| [0-4]/4 ', shown), shown


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
  config = _util.tiny_config()
  config.num_epochs = 3
  config.checkpoint_interval_s = 0  # Every epoch's, to resume from epoch 1.
  config.data.random_flip, config.data.random_shift = True, 2
  straight = str(tmp_path / 'straight')
  summary = _run(config, straight)

  # An interruption after epoch 1: later checkpoints and the summary are
  # gone, metrics.jsonl still holds the lines of epochs 2 and 3.
  resumed = str(tmp_path / 'resumed')
  shutil.copytree(straight, resumed)
  os.remove(os.path.join(resumed, 'summary.json'))
  for step in ('2', '3'):
    shutil.rmtree(os.path.join(resumed, 'checkpoints', step))
  again = _run(config, resumed)

  assert _epoch_records(resumed) == _epoch_records(straight)
  assert again['test_accuracy'] == summary['test_accuracy']
  # TensorBoard hides what the interrupted invocation wrote after epoch 1:
  # each step once, with the uninterrupted run's loss.
  losses = _util.tensorboard_scalars(resumed, 'train/loss')
  assert losses == _util.tensorboard_scalars(straight, 'train/loss')
  assert len(losses) == 12
  assert again['epochs_completed'] == 3
  # Throughput counts only epochs that compiled nothing: not epoch 1 (the
  # first invocation's) nor epoch 2 (the resumed one's), so epoch 3 alone.
  with open(os.path.join(resumed, 'metrics.jsonl')) as f:
    rates = [json.loads(line)['images_per_sec'] for line in f]
  assert again['train_images_per_sec'] == rates[2]


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path):
  config = _util.tiny_config()
  a = _run(config, str(tmp_path / 'a'))
  b = _run(config, str(tmp_path / 'b'))
  config.seed = 1
  c = _run(config, str(tmp_path / 'c'))
  assert _epoch_records(str(tmp_path / 'a')) == _epoch_records(
      str(tmp_path / 'b'))
  assert a['test_loss'] == b['test_loss'] != c['test_loss']


def test_finished_run_is_not_trained_again(tmp_path):
  config = _util.tiny_config()
  first = _run(config, str(tmp_path))
  second = _run(config, str(tmp_path))
  assert second['epochs_completed'] == 1
  assert second['test_loss'] == first['test_loss']
  assert len(_epoch_records(str(tmp_path))) == 1


def test_vmapped_step_equals_one_step_per_seed():
  """The seed axis changes nothing but float rounding.

  SGD, for the reason _sgd_state gives.
  """
  model, tx = models.CNN(), optax.sgd(0.01)
  seeds = [train.create_train_state(jax.random.key(k), model, tx)
           for k in (0, 1)]
  batches = [_split(_batch(8, seed=k), 2) for k in (0, 1)]
  one = jax.pmap(train.train_step, axis_name=train.AXIS)
  many = jax.pmap(jax.vmap(train.train_step), axis_name=train.AXIS)
  together = jax_utils.replicate(train.stack(jax.device_get(seeds)))
  apart = [jax_utils.replicate(s) for s in seeds]
  stacked = jax.tree.map(lambda *xs: np.stack(xs, axis=1), *batches)
  for _ in range(5):
    together, _ = many(together, stacked)
    apart = [one(s, b)[0] for s, b in zip(apart, batches)]
  for k in (0, 1):
    for field in ('params', 'batch_stats'):
      chex.assert_trees_all_close(
          jax.tree.map(lambda x: np.asarray(x)[0, k], getattr(together, field)),
          jax.tree.map(lambda x: np.asarray(x)[0], getattr(apart[k], field)),
          atol=1e-5, rtol=1e-5)


def test_seeds_in_one_program_match_runs_one_by_one(tmp_path):
  """Whole runs: each seed's numbers are those of its own run.

  The tolerance is looser than the step's: Adam turns the float noise in the
  conv biases' gradients (see _sgd_state) into bias steps of +-lr, which
  reach the evaluation through BatchNorm's running mean.
  """
  config = _util.tiny_config()
  config.num_epochs = 2
  # Label smoothing pulls every loss towards the same floor, which would
  # hide how far apart the two seeds' runs end (the last check).
  config.label_smoothing = 0.0
  with _mock_data():
    together = train.train_seeds(config, [0, 3],
                                 [str(tmp_path / 'v0'), str(tmp_path / 'v3')])
    apart = []
    for seed in (0, 3):
      config.seed = seed
      apart.append(train.train_and_evaluate(config, str(tmp_path / f's{seed}')))
  for seed, a, b in zip((0, 3), together, apart):
    assert a['config'] == b['config'] and a['config']['seed'] == seed
    assert a['seeds_in_program'] == 2 and b['seeds_in_program'] == 1
    # Two runs on two devices: the group trains a whole run on each device
    # (parallel.RunsMap), a run alone splits its batch over both.
    assert a['devices_per_run'] == 1 and b['devices_per_run'] == 2
    np.testing.assert_allclose(a['test_loss'], b['test_loss'], rtol=1e-3)
    va = _epoch_records(str(tmp_path / f'v{seed}'))
    sa = _epoch_records(str(tmp_path / f's{seed}'))
    assert len(va) == len(sa) == 2
    for ra, rb in zip(va, sa):
      for key in ('train_loss', 'val_loss'):
        np.testing.assert_allclose(ra[key], rb[key], rtol=1e-3)
  # The two seeds are different runs, not one run twice.
  assert abs(together[0]['test_loss'] - together[1]['test_loss']) > 1e-2


def test_runs_of_other_hyperparameters_in_one_program_match_runs_alone(
    tmp_path):
  """Seed x learning rate x weight decay, and label smoothing, in one program:
  each run's numbers are those of its own run.

  The group trains a whole run on each device (parallel.RunsMap), a run
  alone splits its batch over both, so the sums are split otherwise: the
  training losses agree to 1e-6, the losses measured through BatchNorm's
  running statistics only to a few 1e-3 (the conv-bias noise of
  test_seeds_in_one_program_match_runs_one_by_one; a run alone on one device
  and on two differ by as much).
  """
  configs = []
  for seed in (0, 3):
    for learning_rate in (1e-3, 3e-3):
      for weight_decay in (0.0, 0.1):
        config = _util.tiny_config()
        config.seed, config.learning_rate = seed, learning_rate
        config.weight_decay = weight_decay
        config.label_smoothing = (0.0, 0.1, 0.2)[len(configs) % 3]
        configs.append(config)
  dirs = lambda name: [str(tmp_path / f'{name}{k}')
                       for k in range(len(configs))]
  with _mock_data():
    together = train.train_runs(configs, dirs('v'))
    apart = [train.train_and_evaluate(c, d)
             for c, d in zip(configs, dirs('s'))]
  for config, a, b, va, sa in zip(configs, together, apart, dirs('v'),
                                  dirs('s')):
    assert a['config'] == b['config'] == config.to_dict()
    assert a['seeds_in_program'] == 8 and b['seeds_in_program'] == 1
    assert a['devices_per_run'] == 1 and b['devices_per_run'] == 2
    np.testing.assert_allclose(a['test_loss'], b['test_loss'], rtol=5e-3)
    for ra, rb in zip(_epoch_records(va), _epoch_records(sa)):
      np.testing.assert_allclose(ra['train_loss'], rb['train_loss'],
                                 rtol=1e-4)
      np.testing.assert_allclose(ra['val_loss'], rb['val_loss'], rtol=5e-3)
  # Eight different runs: a run given another's values would not match its
  # own run alone.
  losses = sorted(s['test_loss'] for s in together)
  assert min(np.diff(losses)) > 1e-3, losses
  # The learning rate each run logs is its own.
  for k in (0, 2):
    rates = _util.tensorboard_scalars(dirs('v')[k], 'train/learning_rate')
    np.testing.assert_allclose(rates[0][1], configs[k].learning_rate,
                               rtol=1e-6)


def test_a_run_of_a_group_resumes_alone(tmp_path):
  """Its checkpoint holds its own learning rate, weight decay and label
  smoothing; resumed alone, it goes on as it would have in the group."""
  configs = [_util.tiny_config(), _util.tiny_config()]
  for config, seed, lr, wd, ls in zip(configs, (0, 1), (3e-3, 1e-3),
                                      (0.1, 0.0), (0.2, 0.0)):
    config.seed, config.learning_rate = seed, lr
    config.weight_decay, config.label_smoothing = wd, ls
    config.num_epochs = 2
    config.checkpoint_interval_s = 0  # Every epoch's, to resume from epoch 1.
  group = [str(tmp_path / 'group0'), str(tmp_path / 'group1')]
  resumed = str(tmp_path / 'resumed')
  with _mock_data():
    together = train.train_runs(configs, group)
    shutil.copytree(group[0], resumed)
    os.remove(os.path.join(resumed, 'summary.json'))
    shutil.rmtree(os.path.join(resumed, 'checkpoints', '2'))
    alone = train.train_and_evaluate(configs[0], resumed)
  a, b = _epoch_records(group[0]), _epoch_records(resumed)
  assert a[0] == b[0]  # Trained in the group, restored alone.
  for key in ('train_loss', 'val_loss'):  # As the whole-run comparisons.
    np.testing.assert_allclose(a[1][key], b[1][key], rtol=1e-3)
  np.testing.assert_allclose(alone['test_loss'], together[0]['test_loss'],
                             rtol=1e-3)


def test_runs_that_differ_beyond_per_run_values_are_refused(tmp_path):
  a, b = _util.tiny_config(), _util.tiny_config()
  b.batch_size = 16
  with pytest.raises(ValueError, match='batch_size'):
    train.train_runs([a, b], [str(tmp_path / 'a'), str(tmp_path / 'b')])


def test_seeds_with_a_target_accuracy_are_refused(tmp_path):
  config = _util.tiny_config()
  config.target_test_accuracy = 0.5
  with pytest.raises(ValueError, match='one run at a time'):
    train.train_seeds(config, [0, 1], [str(tmp_path / 'a'),
                                       str(tmp_path / 'b')])


def test_seeds_at_different_epochs_are_refused(tmp_path):
  config = _util.tiny_config()
  _run(config, str(tmp_path / 'a'))
  with _mock_data():
    with pytest.raises(ValueError, match='different epochs'):
      train.train_seeds(config, [0, 1], [str(tmp_path / 'a'),
                                         str(tmp_path / 'b')])


def test_target_accuracy_stops_early_and_is_recorded(tmp_path):
  config = _util.tiny_config()
  config.num_epochs = 3
  config.target_test_accuracy = 1e-6  # Any correct test answer reaches it.
  summary = _run(config, str(tmp_path / 'reached'))
  assert summary['target_epoch'] == summary['epochs_completed'] == 1
  assert summary['time_to_target_s'] > 0
  with open(tmp_path / 'reached' / 'metrics.jsonl') as f:
    assert 'test_accuracy' in json.loads(f.readline())
  # A finished run that reached its target is not trained further.
  again = _run(config, str(tmp_path / 'reached'))
  assert again['epochs_completed'] == 1
  # Resumed with a target it has not reached, it trains on.
  config.target_test_accuracy = 1.0
  higher = _run(config, str(tmp_path / 'reached'))
  assert higher['target_epoch'] is None
  assert higher['epochs_completed'] == 3

  config.target_test_accuracy = 1.0
  summary = _run(config, str(tmp_path / 'missed'))
  assert summary['target_epoch'] is None
  assert summary['epochs_completed'] == 3


def test_a_rerun_with_another_config_is_refused_unless_started_over(tmp_path):
  config = _util.tiny_config()
  first = _run(config, str(tmp_path))
  other = _util.tiny_config()
  other.model.activation = 'tanh'
  other.num_epochs = 2  # Cosine spans num_epochs: another schedule.
  with pytest.raises(validation.ConfigError) as e:
    _run(other, str(tmp_path))
  assert str(e.value) == (
      f'{tmp_path} holds a run of another config: model.activation (relu '
      f'there, tanh now), num_epochs (1 there, 2 now); rerun with its '
      f'values, or pass --start_over to discard it and train again')
  with open(tmp_path / 'summary.json') as f:
    assert json.load(f)['test_loss'] == first['test_loss']  # Untouched.
  again = _run(other, str(tmp_path), start_over=True)
  assert again['config']['model']['activation'] == 'tanh'
  assert [r['epoch'] for r in _epoch_records(str(tmp_path))] == [1, 2]


def test_num_epochs_may_grow_under_a_constant_schedule(tmp_path):
  config = _util.tiny_config()
  config.lr_schedule = 'constant'
  config.num_epochs = 2
  straight = _run(config, str(tmp_path / 'straight'))
  config.num_epochs = 1
  _run(config, str(tmp_path / 'grown'))
  config.num_epochs = 2
  grown = _run(config, str(tmp_path / 'grown'))
  assert _epoch_records(str(tmp_path / 'grown')) == _epoch_records(
      str(tmp_path / 'straight'))
  assert grown['test_loss'] == straight['test_loss']


def test_runs_from_before_a_field_was_added_or_removed_resume(tmp_path):
  config = _util.tiny_config()
  _run(config, str(tmp_path))
  path = tmp_path / 'config.json'
  started = json.loads(path.read_text())
  for field in run_lib.ADDED_FIELDS:
    *parents, leaf = field.split('.')
    node = started
    for p in parents:
      node = node[p]
    del node[leaf]
  # As experiments/relu_speed's runs have it.
  started['train_error_marks'] = [0.25, 0.1]
  path.write_text(json.dumps(started))
  run_lib.check_resumable(str(tmp_path), config)  # Defaults: no change.
  # Its weights load into today's model, which reads the new fields; the
  # removed one is gone.
  restored, variables, _ = run_lib.restore_variables(str(tmp_path))
  assert restored.to_dict() == json.loads(json.dumps(config.to_dict()))
  model = models.create_model(restored.model, bn_axis_name=None)
  model.apply(variables, np.zeros((1, 28, 28, 1), np.float32), train=False)
  config.model.kernel_init_scale = 2.0
  with pytest.raises(validation.ConfigError,
                     match=r'model.kernel_init_scale \(1.0 there, 2.0 now'):
    run_lib.check_resumable(str(tmp_path), config)


def test_a_diverged_run_stops_and_keeps_its_last_good_checkpoint(tmp_path):
  config = _util.tiny_config()
  config.lr_schedule = 'constant'
  _run(config, str(tmp_path))
  # Epoch 2's loss (about 2) is above the ceiling now set: finite, but
  # what a blown-up run looks like.
  config.num_epochs, config.max_train_loss = 3, 0.5
  summary = _run(config, str(tmp_path))
  assert summary['status'] == 'diverged'
  assert summary['diverged_epoch'] == 2 and summary['epochs_completed'] == 1
  assert summary['reason'].startswith('diverged at epoch 2: train loss ')
  assert summary['reason'].endswith('> config.max_train_loss 0.5')
  for key in ('test_accuracy', 'best_val_accuracy', 'train_images_per_sec'):
    assert key not in summary
  assert os.listdir(tmp_path / 'checkpoints') == ['1']
  assert [r['epoch'] for r in _epoch_records(str(tmp_path))] == [1]
  # A rerun does not train it again.
  assert _run(config, str(tmp_path)) == json.loads(json.dumps(summary))
  assert os.listdir(tmp_path / 'checkpoints') == ['1']


def test_a_non_finite_loss_is_a_diverged_run(tmp_path):
  config = _util.tiny_config()
  config.learning_rate = 1e30
  summary = _run(config, str(tmp_path))
  assert summary['status'] == 'diverged' and summary['diverged_epoch'] == 1
  assert summary['diverged_train_loss'] == 'nan'
  assert summary['reason'] == 'diverged at epoch 1: train loss nan is not finite'
  with open(tmp_path / 'summary.json') as f:
    assert json.load(f)['status'] == 'diverged'  # Strict JSON: no NaN.


def test_one_diverged_seed_leaves_the_others_as_they_would_be(tmp_path):
  config = _util.tiny_config()
  config.max_train_loss = float('inf')
  dirs = lambda name: [str(tmp_path / f'{name}{s}') for s in (0, 1)]
  with _mock_data():
    free = train.train_seeds(config, [0, 1], dirs('free'))
    losses = [_epoch_records(d)[0]['train_loss'] for d in dirs('free')]
    assert losses[0] != losses[1]
    # A ceiling between the two: the seed above it diverges alone.
    config.max_train_loss = sum(losses) / 2
    capped = train.train_seeds(config, [0, 1], dirs('capped'))
  high = int(losses[1] > losses[0])
  assert capped[high]['status'] == 'diverged'
  assert capped[1 - high]['status'] == 'ok'
  assert capped[1 - high]['test_loss'] == free[1 - high]['test_loss']


def test_the_scanned_epoch_takes_the_loops_parameters():
  """After one epoch on a slice, the two paths hold the same parameters."""
  config = _util.tiny_config()
  par = parallel.create('pmap')
  model = models._TinyCNN()
  tx = optax.sgd(0.1)
  state = jax.device_get(train.create_train_state(jax.random.key(0), model, tx))
  data = _batch(32)
  data['image'] = (data['image'] * 255).astype(np.uint8)
  plan = train.compile_epoch_plan(par, 32, 8)
  seed_keys = par.replicate(jax.random.key_data(jax.random.split(
      jax.random.key(1), 1)))
  key, indices = plan(seed_keys, par.replicate(np.int32(1)))
  assert train.scans_epoch(config) == (jax.default_backend() != 'cpu')
  results, reported = {}, {'python': [], 'scan': []}
  for loop in ('python', 'scan'):
    config.epoch_loop = loop
    run = train.epoch_runner(config, par, 4)
    results[loop] = run(par.replicate(train.stack([state])),
                        par.replicate(data), key, indices,
                        on_step=reported[loop].append)
  # The loop reports each step (a progress bar); one program has no steps.
  assert len(reported['python']) == 4 and not reported['scan']
  (p_state, p_metrics), (s_state, s_metrics) = results['python'], results['scan']
  assert p_metrics['loss'].shape == s_metrics['loss'].shape == (4, 1)
  chex.assert_trees_all_close(par.get(p_state).params,
                              par.get(s_state).params, atol=1e-5)
  chex.assert_trees_all_close(p_metrics, s_metrics, atol=1e-5)


def test_a_checkpoint_moves_between_layer_sets(tmp_path):
  """Trained with the CPU layers, resumed with Flax's: the same run."""
  config = _util.tiny_config()
  config.lr_schedule = 'constant'
  config.num_epochs = 2
  config.model.layers = 'cpu'
  straight = _run(config, str(tmp_path / 'straight'))
  config.num_epochs = 1
  _run(config, str(tmp_path / 'moved'))
  config.num_epochs, config.model.layers = 2, 'flax'
  moved = _run(config, str(tmp_path / 'moved'))
  assert moved['layers'] == 'flax' and moved['epochs_completed'] == 2
  a, b = (_epoch_records(str(tmp_path / n)) for n in ('straight', 'moved'))
  assert a[0] == b[0]  # Epoch 1 was trained by the same code.
  for key in a[1]:  # Epoch 2, by other code: float tolerance.
    assert abs(a[1][key] - b[1][key]) <= 1e-3 * max(1, abs(a[1][key])), key
  assert abs(straight['test_loss'] - moved['test_loss']) <= 1e-3
