"""Training and evaluation: pure pmapped steps, an epoch loop, checkpoints.

Phases of `train_and_evaluate`, in order: check the config, input pipeline,
model and optimizer, restore, train loop (one compiled program per epoch),
final test evaluation, summary.
"""

import functools
import json
import math
import os
import subprocess
import time
from typing import Any, Callable

from absl import logging
import flax
from flax import jax_utils
from flax.training import train_state
import jax
from jax import lax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import tensorflow_datasets as tfds

from cnn_jax import input_pipeline
from cnn_jax import models
from cnn_jax import validation

AXIS = 'batch'


class TrainState(train_state.TrainState):
  batch_stats: Any


def num_params(params: Any) -> int:
  return sum(x.size for x in jax.tree.leaves(params))


def learning_rate_fn(config: ml_collections.ConfigDict,
                     steps_per_epoch: int) -> optax.Schedule:
  """The per-step learning rate that `config.lr_schedule` names."""
  if config.lr_schedule == 'cosine':
    return optax.cosine_decay_schedule(config.learning_rate,
                                       config.num_epochs * steps_per_epoch)
  return optax.constant_schedule(config.learning_rate)


def create_optimizer(config: ml_collections.ConfigDict,
                     steps_per_epoch: int) -> optax.GradientTransformation:
  """Adam, with decoupled weight decay on the kernels when it is > 0.

  With `config.weight_decay = 0` this is exactly the seed's `optax.adam`.
  """
  learning_rate = learning_rate_fn(config, steps_per_epoch)
  kernels_only = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
  return optax.adamw(learning_rate, weight_decay=config.weight_decay,
                     mask=kernels_only)


def create_train_state(rng: jax.Array, model: models.CNN,
                       tx: optax.GradientTransformation) -> TrainState:
  """Initializes parameters, BatchNorm statistics and the optimizer state."""
  dummy = jnp.zeros((1,) + input_pipeline.IMAGE_SHAPE, jnp.float32)
  variables = model.init(rng, dummy, train=False)
  return TrainState.create(
      apply_fn=model.apply,
      params=variables['params'],
      batch_stats=variables.get('batch_stats', {}),
      tx=tx)


def cross_entropy_loss(logits: jnp.ndarray, labels: jnp.ndarray,
                       label_smoothing: float = 0.0) -> jnp.ndarray:
  """Per-example softmax cross-entropy against (optionally smoothed) labels."""
  targets = optax.smooth_labels(
      jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def train_step(state: TrainState, batch: dict[str, jnp.ndarray], *,
               label_smoothing: float = 0.0
               ) -> tuple[TrainState, dict[str, jnp.ndarray]]:
  """One Adam step on a device's share of the global batch.

  Must run under a map with axis AXIS: gradients and BatchNorm statistics are
  averaged over it, so any device count gives the single-device update.
  """

  def loss_fn(params):
    logits, updates = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats},
        batch['image'], train=True, mutable=['batch_stats'])
    loss = cross_entropy_loss(logits, batch['label'], label_smoothing).mean()
    return loss, (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  grads = lax.pmean(grads, axis_name=AXIS)
  state = state.apply_gradients(
      grads=grads, batch_stats=updates.get('batch_stats', {}))
  accuracy = jnp.mean(jnp.argmax(logits, -1) == batch['label'])
  metrics = lax.pmean({'loss': loss, 'accuracy': accuracy}, axis_name=AXIS)
  return state, metrics


def eval_step(state: TrainState, batch: dict[str, jnp.ndarray]
              ) -> dict[str, jnp.ndarray]:
  """Summed loss and correct count over the unmasked examples of a batch."""
  logits = state.apply_fn(
      {'params': state.params, 'batch_stats': state.batch_stats},
      batch['image'], train=False)
  mask = batch['mask']
  correct = (jnp.argmax(logits, -1) == batch['label']) * mask
  loss = cross_entropy_loss(logits, batch['label']) * mask
  return {'loss': loss.sum(), 'correct': correct.sum(), 'count': mask.sum()}


def train_batch(state: TrainState, data: dict[str, jnp.ndarray],
                epoch: dict[str, jax.Array], step: jnp.ndarray, *,
                augment: Callable[[jax.Array, jnp.ndarray], jnp.ndarray],
                label_smoothing: float = 0.0
                ) -> tuple[TrainState, dict[str, jnp.ndarray]]:
  """Gathers and augments batch `step` of the epoch on the device, then trains.

  Args:
    state: the replica's TrainState.
    data: the whole training split, {'image': uint8, 'label': int32}.
    epoch: {'indices': [steps, batch // devices], 'rng': the epoch's key}.
    step: which of the epoch's batches to take.
    augment: (key, one float image) -> image.
    label_smoothing: passed to train_step.

  The epoch is a Python loop over this function, not one `lax.scan`: on XLA's
  CPU runtime the same step inside a scan ran about 15x slower (2-core
  x86-64, jax 0.10.2).
  """
  idx = epoch['indices'][step]
  # One key per example index: augmentation does not depend on the device count.
  keys = jax.vmap(jax.random.fold_in, (None, 0))(epoch['rng'], idx)
  images = jax.vmap(augment)(keys, input_pipeline.normalize(data['image'][idx]))
  batch = {'image': images, 'label': data['label'][idx]}
  return train_step(state, batch, label_smoothing=label_smoothing)


def evaluate_split(state: TrainState, split: dict[str, jnp.ndarray]
                   ) -> dict[str, jnp.ndarray]:
  """Totals of eval_step over a split laid out by shard_for_eval."""

  def body(totals, batch):
    batch = dict(batch, image=input_pipeline.normalize(batch['image']))
    step = eval_step(state, batch)
    return jax.tree.map(jnp.add, totals, step), None

  zeros = {'loss': 0.0, 'correct': 0.0, 'count': 0.0}
  totals, _ = lax.scan(body, zeros, split)
  return lax.psum(totals, axis_name=AXIS)


def _epoch_indices(rng: jax.Array, *, num_examples: int, batch_size: int,
                   num_devices: int) -> jnp.ndarray:
  return input_pipeline.device_batch_indices(
      rng, num_examples, batch_size, num_devices, lax.axis_index(AXIS))


def _to_devices(tree: Any) -> Any:
  """Puts host arrays with a leading device axis onto the local devices."""
  mesh = jax.sharding.Mesh(np.array(jax.local_devices()), (AXIS,))
  sharding = jax.NamedSharding(mesh, jax.P(AXIS))
  return jax.device_put(tree, sharding)


def _versions() -> dict[str, str]:
  return {'jax': jax.__version__, 'jaxlib': jax.lib.__version__,
          'flax': flax.__version__, 'optax': optax.__version__,
          'tfds': tfds.__version__, 'orbax': ocp.__version__}


def _git_commit() -> str | None:
  """This checkout's commit, '-dirty' if it has uncommitted changes.

  So that a summary names the code that made it; None outside a checkout.
  """
  try:
    out = subprocess.run(['git', 'describe', '--always', '--dirty',
                          '--abbrev=40'], capture_output=True,
                         text=True, timeout=10,
                         cwd=os.path.dirname(os.path.abspath(__file__)))
  except (OSError, subprocess.SubprocessError):
    return None
  return out.stdout.strip() if out.returncode == 0 else None


def _write_json(path: str, obj: Any) -> None:
  """Writes through a temporary name so a reader never sees half a file."""
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def _checkpoint_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), 'checkpoints'),
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, Any]:
  """Trains, selects the epoch with the best validation accuracy, tests it.

  Running again with the same workdir resumes from the latest checkpoint.

  Args:
    config: hyperparameters, as configs/default.py describes them.
    workdir: where checkpoints, metrics.jsonl and summary.json go.

  Returns:
    The summary also written to workdir/summary.json.
  """
  start_time = time.time()
  validation.check_config(config)

  # --- Input pipeline -------------------------------------------------------
  splits = input_pipeline.load_splits(config.data)
  num_devices = jax.local_device_count()
  num_train = splits['train']['label'].shape[0]
  steps_per_epoch = num_train // config.batch_size
  if steps_per_epoch < 1:
    raise validation.ConfigError(
        f'config.batch_size must be <= the number of training examples '
        f'({num_train}); got {config.batch_size}')
  os.makedirs(workdir, exist_ok=True)

  # --- Model and optimizer --------------------------------------------------
  rng = jax.random.key(config.seed)
  init_rng, data_rng = jax.random.split(rng)
  model = models.create_model(config.model)
  state = create_train_state(init_rng, model,
                             create_optimizer(config, steps_per_epoch))
  n_params = num_params(state.params)
  logging.info('parameters: %d', n_params)

  # --- Restore --------------------------------------------------------------
  manager = _checkpoint_manager(workdir, config.max_checkpoints_to_keep)
  best = {'params': state.params, 'batch_stats': state.batch_stats}
  meta = {'epoch': 0, 'best_val_accuracy': -1.0, 'best_val_epoch': 0,
          'wall_time_s': 0.0, 'images_per_sec': []}
  if manager.latest_step() is not None:
    restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(state),
        best=ocp.args.StandardRestore(best),
        meta=ocp.args.JsonRestore()))
    state, best, meta = restored.state, restored.best, restored.meta
    logging.info('resumed after epoch %d', meta['epoch'])
  # Wall time spent by earlier, interrupted invocations of this run.
  earlier_wall_time = meta['wall_time_s']
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  history = []
  if os.path.exists(metrics_path):
    with open(metrics_path) as f:
      history = [json.loads(line) for line in f if line.strip()]
  # Drop lines of epochs that finished after the checkpoint being resumed.
  history = [h for h in history if h['epoch'] <= meta['epoch']]
  _write_json_lines(metrics_path, history)

  # --- Compiled steps -------------------------------------------------------
  augment = functools.partial(input_pipeline.augment,
                              flip=config.data.random_flip,
                              shift=config.data.random_shift)
  p_train_batch = jax.pmap(
      functools.partial(train_batch, augment=augment,
                        label_smoothing=config.label_smoothing),
      axis_name=AXIS, donate_argnums=(0,))
  p_epoch_indices = jax.pmap(
      functools.partial(_epoch_indices, num_examples=num_train,
                        batch_size=config.batch_size, num_devices=num_devices),
      axis_name=AXIS)
  step_ids = [_to_devices(np.full((num_devices,), t, np.int32))
              for t in range(steps_per_epoch)]
  p_evaluate = jax.pmap(evaluate_split, axis_name=AXIS)
  train_data = jax_utils.replicate(splits['train'])
  val_split = _to_devices(input_pipeline.shard_for_eval(
      splits['validation'], config.eval_batch_size, num_devices))

  template = state

  def evaluate(variables, split):
    eval_state = jax_utils.replicate(template.replace(**variables))
    totals = jax.device_get(jax_utils.unreplicate(p_evaluate(eval_state, split)))
    return {'accuracy': float(totals['correct'] / totals['count']),
            'loss': float(totals['loss'] / totals['count'])}

  # --- Train loop -----------------------------------------------------------
  state = jax_utils.replicate(state)
  for epoch in range(meta['epoch'] + 1, config.num_epochs + 1):
    t0 = time.time()
    epoch_rng = jax_utils.replicate(jax.random.fold_in(data_rng, epoch))
    epoch_data = {'indices': p_epoch_indices(epoch_rng), 'rng': epoch_rng}
    step_metrics = []
    for step_id in step_ids:
      state, metrics = p_train_batch(state, train_data, epoch_data, step_id)
      step_metrics.append(metrics)
    # One host sync per epoch, not per step.
    step_metrics = jax.device_get(step_metrics)
    train_metrics = {k: np.array([m[k][0] for m in step_metrics])
                     for k in step_metrics[0]}
    seconds = time.time() - t0
    train_loss = float(np.mean(train_metrics['loss']))
    if not math.isfinite(train_loss):
      raise FloatingPointError(f'non-finite train loss at epoch {epoch}')
    host_state = jax.device_get(jax_utils.unreplicate(state))
    variables = {'params': host_state.params,
                 'batch_stats': host_state.batch_stats}
    val = evaluate(variables, val_split)
    if val['accuracy'] > meta['best_val_accuracy']:
      best = variables
      meta.update(best_val_accuracy=val['accuracy'], best_val_epoch=epoch)
    images_per_sec = steps_per_epoch * config.batch_size / seconds
    meta['images_per_sec'].append(images_per_sec)
    meta['epoch'] = epoch
    meta['wall_time_s'] = earlier_wall_time + time.time() - start_time
    record = {'epoch': epoch, 'train_loss': train_loss,
              'train_accuracy': float(np.mean(train_metrics['accuracy'])),
              'val_loss': val['loss'], 'val_accuracy': val['accuracy'],
              'epoch_time_s': seconds, 'images_per_sec': images_per_sec}
    history.append(record)
    _write_json_lines(metrics_path, history)
    manager.save(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardSave(host_state),
        best=ocp.args.StandardSave(best),
        meta=ocp.args.JsonSave(meta)))
    eta = seconds * (config.num_epochs - epoch)
    logging.info(
        'epoch %d/%d  train_loss %.4f  train_acc %.4f  val_acc %.4f  '
        '%.0f img/s  %.1fs  ETA %.0fs', epoch, config.num_epochs, train_loss,
        record['train_accuracy'], val['accuracy'], images_per_sec, seconds,
        eta)
  manager.wait_until_finished()
  manager.close()

  # --- Test, once, with the epoch validation selected -----------------------
  test_split = _to_devices(input_pipeline.shard_for_eval(
      splits['test'], config.eval_batch_size, num_devices))
  test = evaluate(best, test_split)
  # The first epoch includes compilation; steady state is what the rest show.
  rates = meta['images_per_sec']
  steady = rates[1:] or rates
  summary = {
      'test_accuracy': test['accuracy'],
      'test_loss': test['loss'],
      'best_val_accuracy': meta['best_val_accuracy'],
      'best_val_epoch': meta['best_val_epoch'],
      'final_val_accuracy': history[-1]['val_accuracy'],
      'epochs_completed': meta['epoch'],
      'num_params': n_params,
      'num_devices': num_devices,
      'num_train_examples': num_train,
      'train_images_per_sec': float(np.mean(steady)),
      'wall_time_s': earlier_wall_time + time.time() - start_time,
      'config': config.to_dict(),
      'versions': _versions(),
      'git_commit': _git_commit(),
  }
  _write_json(os.path.join(workdir, 'summary.json'), summary)
  logging.info('test_accuracy %.4f (epoch %d by validation)',
               test['accuracy'], meta['best_val_epoch'])
  return summary


def _write_json_lines(path: str, records: list[dict[str, Any]]) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    for r in records:
      f.write(json.dumps(r, sort_keys=True) + '\n')
  os.replace(tmp, path)
