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
import tensorflow_datasets as tfds

from cnn_jax import models
from cnn_jax import train
import _util


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


def _run(config, workdir):
  with tfds.testing.mock_data(num_examples=48):
    return train.train_and_evaluate(config, workdir)


def _epoch_records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  timing = ('epoch_time_s', 'images_per_sec')
  return [{k: v for k, v in r.items() if k not in timing} for r in records]


def test_train_and_evaluate_writes_summary_and_metrics(tmp_path):
  config = _util.tiny_config()
  summary = _run(config, str(tmp_path))
  with open(tmp_path / 'summary.json') as f:
    assert json.load(f) == json.loads(json.dumps(summary))
  for key in ('test_accuracy', 'test_loss', 'best_val_accuracy',
              'epochs_completed', 'num_params', 'num_devices',
              'train_images_per_sec', 'wall_time_s', 'config', 'versions'):
    assert key in summary, key
  assert summary['epochs_completed'] == 1
  assert summary['num_devices'] == 2
  assert summary['num_params'] == 29_034
  assert 0.0 <= summary['test_accuracy'] <= 1.0
  assert summary['config']['learning_rate'] == config.learning_rate
  assert set(summary['versions']) >= {'jax', 'flax', 'optax', 'tfds'}
  # The tests run in a checkout: a full hash, '-dirty' while it is edited.
  assert re.search(r'[0-9a-f]{40}(-dirty)?$', summary['git_commit'])
  assert len(_epoch_records(str(tmp_path))) == 1


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
  config = _util.tiny_config()
  config.num_epochs = 3
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
  assert again['epochs_completed'] == 3


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
