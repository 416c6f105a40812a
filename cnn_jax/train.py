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
from typing import Any, Callable, Sequence

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
  # One compiled program: run op by op, init compiled each op on its own,
  # about 3 s of a run's start-up here.
  variables = jax.jit(functools.partial(model.init, train=False))(rng, dummy)
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


def compile_train_batch(config: ml_collections.ConfigDict) -> Callable:
  """`train_batch` mapped over devices (pmap) and, inside each, over seeds.

  Takes (state [devices, seeds, ...], data [devices, ...], epoch [devices,
  seeds, ...], step [devices]): the data and the step number are shared by
  the seeds. The state's buffers are donated to the new state.
  """
  augment = functools.partial(input_pipeline.augment,
                              flip=config.data.random_flip,
                              shift=config.data.random_shift)
  step = functools.partial(train_batch, augment=augment,
                           label_smoothing=config.label_smoothing)
  return jax.pmap(jax.vmap(step, in_axes=(0, None, 0, None)),
                  axis_name=AXIS, donate_argnums=(0,))


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


def to_devices(tree: Any) -> Any:
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
  return train_seeds(config, [config.seed], [workdir])[0]


def stack(trees: Sequence[Any]) -> Any:
  """Per-seed pytrees -> one pytree with a leading seed axis."""
  return jax.tree.map(lambda *xs: np.stack(xs), *trees)


def unstack(tree: Any, k: int) -> Any:
  """Seed k of a pytree with a leading seed axis."""
  return jax.tree.map(lambda x: x[k], tree)


def _restore(manager: ocp.CheckpointManager, state: TrainState) -> dict:
  """This run's latest checkpoint, or a fresh start when it has none."""
  fresh = {'state': state,
           'best': {'params': state.params, 'batch_stats': state.batch_stats},
           'meta': {'epoch': 0, 'best_val_accuracy': -1.0,
                    'best_val_epoch': 0, 'wall_time_s': 0.0,
                    'images_per_sec': [], 'target': 0.0,
                    'target_epoch': None, 'time_to_target_s': None}}
  if manager.latest_step() is None:
    return fresh
  restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
      state=ocp.args.StandardRestore(state),
      best=ocp.args.StandardRestore(fresh['best']),
      meta=ocp.args.JsonRestore()))
  return {'state': restored.state, 'best': restored.best,
          'meta': dict(fresh['meta'], **restored.meta)}


def _read_history(workdir: str, last_epoch: int) -> list[dict[str, Any]]:
  """metrics.jsonl up to the checkpoint being resumed; later lines are dropped."""
  path = os.path.join(workdir, 'metrics.jsonl')
  history = []
  if os.path.exists(path):
    with open(path) as f:
      history = [json.loads(line) for line in f if line.strip()]
  history = [h for h in history if h['epoch'] <= last_epoch]
  _write_json_lines(path, history)
  return history


def train_seeds(config: ml_collections.ConfigDict, seeds: Sequence[int],
                workdirs: Sequence[str]) -> list[dict[str, Any]]:
  """Trains one run per seed, all in one compiled program.

  The seeds' parameters, optimizer states and BatchNorm statistics carry a
  leading seed axis that `jax.vmap` maps the steps over; every seed draws its
  own initialization, shuffling and augmentation from its seed, exactly as
  `train_and_evaluate` with `config.seed = seed` would. Each run keeps its
  own workdir (checkpoints, metrics.jsonl, summary.json) and resumes from
  it; the runs must stand at the same epoch. With
  `config.target_test_accuracy` set it takes one seed only, since each run
  stops at its own epoch.

  Args:
    config: hyperparameters shared by the runs; `config.seed` is ignored.
    seeds: one seed per run.
    workdirs: one folder per run.

  Returns:
    The runs' summaries, in the order of `seeds`.
  """
  start_time = time.time()
  if len(seeds) != len(workdirs) or not seeds:
    raise ValueError('train_seeds needs one workdir per seed')
  if config.target_test_accuracy and len(seeds) > 1:
    # Each run would stop at its own epoch; one program cannot.
    raise ValueError('train_seeds trains one seed at a time when '
                     'config.target_test_accuracy is set')
  configs = []
  for seed in seeds:
    run_config = ml_collections.ConfigDict(config.to_dict())
    run_config.seed = seed
    validation.check_config(run_config)
    configs.append(run_config)
  num_seeds = len(seeds)

  # --- Input pipeline -------------------------------------------------------
  splits = input_pipeline.load_splits(config.data)
  num_devices = jax.local_device_count()
  num_train = splits['train']['label'].shape[0]
  steps_per_epoch = num_train // config.batch_size
  if steps_per_epoch < 1:
    raise validation.ConfigError(
        f'config.batch_size must be <= the number of training examples '
        f'({num_train}); got {config.batch_size}')

  # --- Model and optimizer --------------------------------------------------
  model = models.create_model(config.model)
  tx = create_optimizer(config, steps_per_epoch)
  init_rngs, data_rngs = zip(*(jax.random.split(jax.random.key(s))
                               for s in seeds))
  fresh = [jax.device_get(create_train_state(r, model, tx)) for r in init_rngs]
  n_params = num_params(fresh[0].params)
  logging.info('parameters: %d; seeds in one program: %d', n_params,
               num_seeds)

  # --- Restore --------------------------------------------------------------
  for workdir in workdirs:
    os.makedirs(workdir, exist_ok=True)
  managers = [_checkpoint_manager(w, config.max_checkpoints_to_keep)
              for w in workdirs]
  runs = [_restore(m, s) for m, s in zip(managers, fresh)]
  metas = [r['meta'] for r in runs]
  if len({m['epoch'] for m in metas}) > 1:
    raise ValueError(f'runs to train together stand at different epochs: '
                     f'{[m["epoch"] for m in metas]}')
  if metas[0]['epoch']:
    logging.info('resumed after epoch %d', metas[0]['epoch'])
  target = config.target_test_accuracy
  for meta in metas:
    if meta['target'] != target:
      # An epoch that reached another target says nothing about this one.
      meta.update(target=target, target_epoch=None, time_to_target_s=None)
  best = [r['best'] for r in runs]
  # Wall time spent by earlier, interrupted invocations of these runs.
  earlier_wall_time = metas[0]['wall_time_s']
  histories = [_read_history(w, metas[0]['epoch']) for w in workdirs]

  # --- Compiled steps -------------------------------------------------------
  p_train_batch = compile_train_batch(config)
  p_epoch_indices = jax.pmap(
      jax.vmap(functools.partial(_epoch_indices, num_examples=num_train,
                                 batch_size=config.batch_size,
                                 num_devices=num_devices)),
      axis_name=AXIS)
  step_ids = [to_devices(np.full((num_devices,), t, np.int32))
              for t in range(steps_per_epoch)]
  p_evaluate = jax.pmap(jax.vmap(evaluate_split, in_axes=(0, None)),
                        axis_name=AXIS)
  train_data = jax_utils.replicate(splits['train'])
  eval_splits = {name: to_devices(input_pipeline.shard_for_eval(
      splits[name], config.eval_batch_size, num_devices))
                 for name in ('validation', 'test')}
  template = stack(fresh)

  def evaluate(variables: list[Any], split: str) -> list[dict[str, float]]:
    """Accuracy and loss of each run's variables on a split."""
    stacked = template.replace(**stack(variables))
    totals = jax.device_get(jax_utils.unreplicate(
        p_evaluate(jax_utils.replicate(stacked), eval_splits[split])))
    return [{'accuracy': float(totals['correct'][k] / totals['count'][k]),
             'loss': float(totals['loss'][k] / totals['count'][k])}
            for k in range(num_seeds)]

  # --- Train loop -----------------------------------------------------------
  state = jax_utils.replicate(stack([r['state'] for r in runs]))
  epoch = metas[0]['epoch']
  while epoch < config.num_epochs and not (
      target and all(m['target_epoch'] for m in metas)):
    epoch += 1
    t0 = time.time()
    epoch_rng = jax_utils.replicate(jnp.stack(
        [jax.random.fold_in(r, epoch) for r in data_rngs]))
    epoch_data = {'indices': p_epoch_indices(epoch_rng), 'rng': epoch_rng}
    step_metrics = []
    for step_id in step_ids:
      state, metrics = p_train_batch(state, train_data, epoch_data, step_id)
      step_metrics.append(metrics)
    # One host sync per epoch, not per step.
    step_metrics = jax.device_get(step_metrics)
    seconds = time.time() - t0
    # Every image of every seed's epoch, per second of the program.
    images_per_sec = num_seeds * steps_per_epoch * config.batch_size / seconds
    host_state = jax.device_get(jax_utils.unreplicate(state))
    variables = [{'params': s.params, 'batch_stats': s.batch_stats}
                 for s in (unstack(host_state, k) for k in range(num_seeds))]
    val = evaluate(variables, 'validation')
    # The test split is read here only to stop at a target; selection
    # still uses validation alone.
    test = evaluate(variables, 'test') if target else [None] * num_seeds
    train_losses = [float(np.mean([m['loss'][0, k] for m in step_metrics]))
                    for k in range(num_seeds)]
    # Checked for every seed before any writes, so the runs stay in step.
    for k, train_loss in enumerate(train_losses):
      if not math.isfinite(train_loss):
        raise FloatingPointError(
            f'non-finite train loss at epoch {epoch} (seed {seeds[k]})')
    for k in range(num_seeds):
      meta = metas[k]
      train_loss = train_losses[k]
      if val[k]['accuracy'] > meta['best_val_accuracy']:
        best[k] = variables[k]
        meta.update(best_val_accuracy=val[k]['accuracy'], best_val_epoch=epoch)
      meta['images_per_sec'].append(images_per_sec)
      meta['epoch'] = epoch
      meta['wall_time_s'] = earlier_wall_time + time.time() - start_time
      record = {'epoch': epoch, 'train_loss': train_loss,
                'train_accuracy': float(np.mean(
                    [m['accuracy'][0, k] for m in step_metrics])),
                'val_loss': val[k]['loss'],
                'val_accuracy': val[k]['accuracy'],
                'epoch_time_s': seconds, 'images_per_sec': images_per_sec}
      if test[k] is not None:
        record['test_accuracy'] = test[k]['accuracy']
        if test[k]['accuracy'] >= target and not meta['target_epoch']:
          meta.update(target_epoch=epoch, time_to_target_s=meta['wall_time_s'])
      histories[k].append(record)
      _write_json_lines(os.path.join(workdirs[k], 'metrics.jsonl'),
                        histories[k])
      managers[k].save(epoch, args=ocp.args.Composite(
          state=ocp.args.StandardSave(unstack(host_state, k)),
          best=ocp.args.StandardSave(best[k]),
          meta=ocp.args.JsonSave(meta)))
      logging.info(
          'epoch %d/%d%s  train_loss %.4f  train_acc %.4f  val_acc %.4f%s  '
          '%.0f img/s  %.1fs  ETA %.0fs', epoch, config.num_epochs,
          f'  seed {seeds[k]}' if num_seeds > 1 else '', train_loss,
          record['train_accuracy'], val[k]['accuracy'],
          f'  test_acc {test[k]["accuracy"]:.4f}' if test[k] else '',
          images_per_sec, seconds, seconds * (config.num_epochs - epoch))
  for manager in managers:
    manager.wait_until_finished()
    manager.close()

  # --- Test, once, with the epoch validation selected -----------------------
  test = evaluate(best, 'test')
  summaries = []
  for k in range(num_seeds):
    meta = metas[k]
    # The first epoch includes compilation; steady state is what the rest show.
    rates = meta['images_per_sec']
    steady = rates[1:] or rates
    summary = {
        'test_accuracy': test[k]['accuracy'],
        'test_loss': test[k]['loss'],
        'best_val_accuracy': meta['best_val_accuracy'],
        'best_val_epoch': meta['best_val_epoch'],
        'final_val_accuracy': histories[k][-1]['val_accuracy'],
        'epochs_completed': meta['epoch'],
        'target_epoch': meta['target_epoch'],
        'time_to_target_s': meta['time_to_target_s'],
        'num_params': n_params,
        'num_devices': num_devices,
        'seeds_in_program': num_seeds,
        'num_train_examples': num_train,
        'train_images_per_sec': float(np.mean(steady)),
        'wall_time_s': earlier_wall_time + time.time() - start_time,
        'config': configs[k].to_dict(),
        'versions': _versions(),
        'git_commit': _git_commit(),
    }
    _write_json(os.path.join(workdirs[k], 'summary.json'), summary)
    logging.info('test_accuracy %.4f (epoch %d by validation)%s',
                 test[k]['accuracy'], meta['best_val_epoch'],
                 f' seed {seeds[k]}' if num_seeds > 1 else '')
    summaries.append(summary)
  return summaries


def _write_json_lines(path: str, records: list[dict[str, Any]]) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    for r in records:
      f.write(json.dumps(r, sort_keys=True) + '\n')
  os.replace(tmp, path)
