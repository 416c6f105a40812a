"""Training and evaluation: pure per-device steps and the loop that runs them.

`train_runs` reads straight down: check the configs, input pipeline, model
and optimizer, open the runs (resuming each from its folder), compile the
steps, train loop, test. Where the steps run is `parallel`'s concern, what
each run keeps and writes is `run`'s.

Runs whose configs differ only in PER_RUN_FIELDS share one compiled program:
each run's values of those fields are leaves of its state (the learning
rate's peak and the weight decay through `optax.inject_hyperparams`, the
label smoothing a TrainState field), so the program is vmapped over a
leading run axis of the state and the keys, and nothing of a run's values
is baked into it. A run alone is the same program over a run axis of one.
"""

import copy
import dataclasses
import functools
import json
import math
import time
from typing import Any, Callable, Sequence

from absl import logging
from flax.training import train_state
import jax
from jax import lax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from cnn_jax import input_pipeline
from cnn_jax import models
from cnn_jax import monitor
from cnn_jax import parallel
from cnn_jax import records
from cnn_jax import run as run_lib
from cnn_jax import validation

AXIS = parallel.AXIS
REPLICATED, SHARDED = parallel.REPLICATED, parallel.SHARDED
RUNS, SHARDED_RUNS = parallel.RUNS, parallel.SHARDED_RUNS


# The config fields whose values may differ between the runs of one program.
PER_RUN_FIELDS = ('seed', 'learning_rate', 'weight_decay', 'label_smoothing')


class TrainState(train_state.TrainState):
  batch_stats: Any
  # A state leaf, not a constant of the step, so that one program trains
  # runs of several values (`with_run_values`).
  label_smoothing: Any = 0.0


def num_params(params: Any) -> int:
  return sum(x.size for x in jax.tree.leaves(params))


def lr_shape(config: ml_collections.ConfigDict,
             steps_per_epoch: int) -> optax.Schedule:
  """The learning rate's schedule with a peak of 1, which `config.lr_schedule`
  names: shared by the runs of one program, each scaling it by its own
  `config.learning_rate`. A cosine spans all `num_epochs`."""
  if config.lr_schedule == 'cosine':
    return optax.cosine_decay_schedule(1.0, config.num_epochs * steps_per_epoch)
  return optax.constant_schedule(1.0)


def learning_rate_fn(config: ml_collections.ConfigDict,
                     steps_per_epoch: int) -> optax.Schedule:
  """The per-step learning rate: `config.learning_rate` times `lr_shape`."""
  shape = lr_shape(config, steps_per_epoch)
  return lambda step: config.learning_rate * shape(step)


def create_optimizer(config: ml_collections.ConfigDict,
                     steps_per_epoch: int) -> optax.GradientTransformation:
  """Adam, with decoupled weight decay on the kernels when it is > 0.

  The peak learning rate and the weight decay are injected hyperparameters,
  leaves of the optimizer's state (initialized to `config`'s values; another
  run's set by `with_run_values`); the schedule's shape scales the update
  after them. With `config.weight_decay = 0` this is the seed's `optax.adam`.
  """
  kernels_only = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
  adamw = optax.inject_hyperparams(
      _adamw, static_args=('mask',), hyperparam_dtype=jnp.float32)
  return optax.chain(
      adamw(learning_rate=config.learning_rate,
            weight_decay=config.weight_decay, mask=kernels_only),
      optax.scale_by_schedule(lr_shape(config, steps_per_epoch)))


def _adamw(learning_rate: jax.Array, weight_decay: jax.Array,
           mask: Callable[[Any], Any]) -> optax.GradientTransformation:
  """`optax.adamw` with these two hyperparameters alone injected: Adam's
  betas stay Python constants, as `optax.adam` has them (in float32 state,
  1 - b2 would round)."""
  return optax.adamw(learning_rate, weight_decay=weight_decay, mask=mask)


def with_run_values(state: TrainState,
                    config: ml_collections.ConfigDict) -> TrainState:
  """`state` holding `config`'s learning rate, weight decay and label
  smoothing, whichever config its optimizer was created from."""
  opt_state = optax.tree_utils.tree_set(
      state.opt_state, learning_rate=np.float32(config.learning_rate),
      weight_decay=np.float32(config.weight_decay))
  return state.replace(opt_state=opt_state,
                       label_smoothing=np.float32(config.label_smoothing))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _init_variables(model: models.CNN, tx: optax.GradientTransformation,
                    rng: jax.Array) -> tuple[Any, optax.OptState]:
  """The model's variables and the optimizer's state, as one compiled
  program per model and optimizer, whatever the seed, rather than op by op,
  each op compiled on its own, and each seed again."""
  dummy = jnp.zeros((1,) + input_pipeline.IMAGE_SHAPE, jnp.float32)
  variables = model.init(rng, dummy, train=False)
  return variables, tx.init(variables['params'])


def create_train_state(rng: jax.Array, model: models.CNN,
                       tx: optax.GradientTransformation) -> TrainState:
  """Initializes parameters, BatchNorm statistics and the optimizer state."""
  variables, opt_state = _init_variables(model, tx, rng)
  return TrainState(step=0, apply_fn=model.apply, params=variables['params'],
                    tx=tx, opt_state=opt_state,
                    batch_stats=variables.get('batch_stats', {}),
                    label_smoothing=np.float32(0))


def cross_entropy_loss(logits: jnp.ndarray, labels: jnp.ndarray,
                       label_smoothing: float | jnp.ndarray = 0.0
                       ) -> jnp.ndarray:
  """Per-example softmax cross-entropy against (optionally smoothed) labels."""
  targets = optax.smooth_labels(
      jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def train_step(state: TrainState, batch: dict[str, jnp.ndarray]
               ) -> tuple[TrainState, dict[str, jnp.ndarray]]:
  """One Adam step on a device's share of the global batch, against labels
  smoothed by `state.label_smoothing`.

  Runs on each device under a map with axis AXIS (`parallel`): gradients
  and BatchNorm statistics are averaged over it, so any device count gives
  the single-device update.
  """

  def loss_fn(params):
    logits, updates = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats},
        batch['image'], train=True, mutable=['batch_stats'])
    loss = cross_entropy_loss(logits, batch['label'],
                              state.label_smoothing).mean()
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



def epoch_plan(seed_key: jax.Array, epoch: jnp.ndarray, *, num_examples: int,
               batch_size: int, num_devices: int
               ) -> tuple[jax.Array, jnp.ndarray]:
  """The epoch's key and this device's indices, [steps, batch // devices].

  Every device draws the same permutation from the run's key and the epoch
  number, and takes its own slice of each global batch.
  """
  key = jax.random.fold_in(jax.random.wrap_key_data(seed_key), epoch)
  indices = input_pipeline.device_batch_indices(
      key, num_examples, batch_size, num_devices, lax.axis_index(AXIS))
  return key, indices


def train_batch(state: TrainState, data: dict[str, jnp.ndarray],
                key: jax.Array, indices: jnp.ndarray, step: jnp.ndarray, *,
                augment: Callable[[jax.Array, jnp.ndarray], jnp.ndarray]
                ) -> tuple[TrainState, dict[str, jnp.ndarray]]:
  """Gathers and augments batch `step` of the epoch on the device, then trains.

  Args:
    state: the TrainState.
    data: the whole training split, {'image': uint8, 'label': int32}.
    key: the epoch's key (`epoch_plan`).
    indices: this device's indices for the epoch (`epoch_plan`).
    step: which of the epoch's batches to take.
    augment: (key, one float image) -> image.
  """
  idx = indices[step]
  # One key per example index: augmentation does not depend on the device count.
  keys = jax.vmap(jax.random.fold_in, (None, 0))(key, idx)
  images = jax.vmap(augment)(keys, input_pipeline.normalize(data['image'][idx]))
  batch = {'image': images, 'label': data['label'][idx]}
  return train_step(state, batch)


def evaluate_split(state: TrainState, split: dict[str, jnp.ndarray],
                   num_steps: jnp.ndarray) -> dict[str, jnp.ndarray]:
  """Totals of eval_step over the first `num_steps` steps of this device's
  rows of a split (shard_for_eval).

  The step count is an argument, not the array's length, so that splits
  padded to one shape (validation and test) share one compiled program;
  the padding steps past `num_steps` are skipped.
  """

  def body(i, totals):
    batch = jax.tree.map(
        lambda x: lax.dynamic_index_in_dim(x, i, keepdims=False), split)
    batch = dict(batch, image=input_pipeline.normalize(batch['image']))
    return jax.tree.map(jnp.add, totals, eval_step(state, batch))

  zeros = {k: jnp.zeros((), jnp.float32) for k in ('loss', 'correct', 'count')}
  totals = lax.fori_loop(0, num_steps, body, zeros)
  return lax.psum(totals, axis_name=AXIS)


# Each step below is vmapped over a leading run axis of the state (and of
# the keys), then mapped over the devices; data and step numbers are shared.
# The run axis is of kind RUNS: whole on every device, or split over them
# (parallel.create decides).

def _train_options(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """train_batch's keyword arguments that come from the config."""
  augment = functools.partial(input_pipeline.augment,
                              flip=config.data.random_flip,
                              shift=config.data.random_shift)
  return {'augment': augment}


def compile_train_batch(config: ml_collections.ConfigDict,
                        par: parallel.Parallelism) -> Callable:
  """(state, data, key, indices, step) -> (state, metrics); donates state."""
  step = functools.partial(train_batch, **_train_options(config))
  return par.map(jax.vmap(step, in_axes=(0, None, 0, 0, None)),
                 (RUNS, REPLICATED, RUNS, SHARDED_RUNS, REPLICATED),
                 (RUNS, RUNS), donate_argnums=(0,))


def train_epoch(state: TrainState, data: dict[str, jnp.ndarray],
                key: jax.Array, indices: jnp.ndarray, **kwargs: Any
                ) -> tuple[TrainState, dict[str, jnp.ndarray]]:
  """Every batch of the epoch as one program: train_batch under lax.scan.

  Returns the state and each step's metrics, [steps] per metric.
  """
  def body(state, step):
    return train_batch(state, data, key, indices, step, **kwargs)

  return lax.scan(body, state, jnp.arange(indices.shape[0]))


def compile_train_epoch(config: ml_collections.ConfigDict,
                        par: parallel.Parallelism) -> Callable:
  """(state, data, key, indices) -> (state, metrics [runs, steps])."""
  epoch = functools.partial(train_epoch, **_train_options(config))
  return par.map(jax.vmap(epoch, in_axes=(0, None, 0, 0)),
                 (RUNS, REPLICATED, RUNS, SHARDED_RUNS),
                 (RUNS, RUNS), donate_argnums=(0,))


def scans_epoch(config: ml_collections.ConfigDict) -> bool:
  """`config.epoch_loop`, with 'auto' resolved: the one place that decides.

  'auto' scans on GPUs and TPUs, where a step is cheap and the Python loop's
  dispatch is most of an epoch, and loops on a CPU, where the scanned epoch
  is the slower (docs/performance.md).
  """
  if config.epoch_loop == 'auto':
    return jax.default_backend() != 'cpu'
  return config.epoch_loop == 'scan'


def epoch_runner(config: ml_collections.ConfigDict, par: parallel.Parallelism,
                 steps: int) -> Callable:
  """(state, data, key, indices[, on_step]) -> (state, host metrics
  [steps, runs]).

  The epoch runs as one compiled program or as a Python loop of compiled
  steps (`scans_epoch`); either way the step metrics reach the host once,
  at the epoch's end. The loop calls `on_step(metrics)` after each step
  (a progress bar); one program has no steps to report.
  """
  if scans_epoch(config):
    p_epoch = compile_train_epoch(config, par)

    def run(state, data, key, indices, on_step=None):
      del on_step
      state, metrics = p_epoch(state, data, key, indices)
      return state, jax.tree.map(lambda x: x.T, par.get(metrics))
    return run

  p_train_batch = compile_train_batch(config, par)
  step_ids = [par.replicate(np.int32(t)) for t in range(steps)]

  def loop(state, data, key, indices, on_step=None):
    step_metrics = []
    for step_id in step_ids:
      state, metrics = p_train_batch(state, data, key, indices, step_id)
      step_metrics.append(metrics)
      if par.wait_each_step:
        jax.block_until_ready(metrics)
      if on_step:
        on_step(metrics)
    return state, stack(par.get(step_metrics))
  return loop


def compile_epoch_plan(par: parallel.Parallelism, num_examples: int,
                       batch_size: int) -> Callable:
  """(seed keys, epoch) -> (epoch keys, indices)."""
  plan = functools.partial(epoch_plan, num_examples=num_examples,
                           batch_size=batch_size,
                           num_devices=par.batch_devices)
  return par.map(jax.vmap(plan, in_axes=(0, None)), (RUNS, REPLICATED),
                 (RUNS, SHARDED_RUNS))


def compile_evaluate(par: parallel.Parallelism) -> Callable:
  """(state, split, num_steps) -> each run's {'loss', 'correct', 'count'}
  totals."""
  return par.map(jax.vmap(evaluate_split, in_axes=(0, None, None)),
                 (RUNS, SHARDED, REPLICATED), RUNS)


def stack(trees: Sequence[Any]) -> Any:
  """Per-run pytrees -> one pytree with a leading run axis."""
  return jax.tree.map(lambda *xs: np.stack(xs), *trees)


def unstack(tree: Any, k: int) -> Any:
  """Run k of a pytree with a leading run axis."""
  return jax.tree.map(lambda x: x[k], tree)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       start_over: bool = False) -> dict[str, Any]:
  """Trains, selects the epoch with the best validation accuracy, tests it.

  Running again with the same workdir and config resumes from the latest
  checkpoint; another config is refused (run.check_resumable).

  Args:
    config: hyperparameters, as configs/default.py describes them.
    workdir: where checkpoints, metrics.jsonl and summary.json go.
    start_over: discard what `workdir` holds and train from scratch.

  Returns:
    The summary also written to workdir/summary.json; its "status" is "ok",
    or "diverged" for a run whose loss blew up (then without accuracies).
  """
  return train_runs([config], [workdir], start_over=start_over)[0]


def program_key(config: ml_collections.ConfigDict) -> str:
  """What decides a run's compiled program: its config but PER_RUN_FIELDS.

  Runs with equal keys may train together (`train_runs`).
  """
  rest = config.to_dict()
  for field in PER_RUN_FIELDS:
    rest.pop(field)
  return json.dumps(rest, sort_keys=True, default=repr)


def _check_runs(configs: Sequence[ml_collections.ConfigDict],
                workdirs: Sequence[str]) -> None:
  """Raises ValueError unless the configs can train in one program."""
  if len(configs) != len(workdirs) or not configs:
    raise ValueError('train_runs needs one workdir per config')
  if configs[0].target_test_accuracy and len(configs) > 1:
    # Each run would stop at its own epoch; one program cannot.
    raise ValueError('train_runs trains one run at a time when '
                     'config.target_test_accuracy is set')
  first = run_lib.flat(configs[0].to_dict())
  for config in configs:
    validation.check_config(config)
    if program_key(config) != program_key(configs[0]):
      other = run_lib.flat(config.to_dict())
      fields = sorted(f for f in set(first) | set(other)
                      if f not in PER_RUN_FIELDS
                      and first.get(f) != other.get(f))
      raise ValueError(
          f'runs in one program may differ only in {", ".join(PER_RUN_FIELDS)}'
          f'; these differ in {", ".join(fields)}')


@jax.jit
def _keys(seed: int) -> tuple[jax.Array, jax.Array]:
  """A run's initialization key and its data (shuffling, augmentation) key.

  One compiled program for every seed, instead of one per random op.
  """
  init_key, data_key = jax.random.split(jax.random.key(seed))
  return init_key, data_key


def _run_label(config: ml_collections.ConfigDict,
               configs: Sequence[ml_collections.ConfigDict]) -> str:
  """A run's PER_RUN_FIELDS values that differ within its group, e.g.
  '  seed 0 learning_rate 0.01'; '' for a run alone."""
  return ''.join(f'  {f} {config[f]}' for f in PER_RUN_FIELDS
                 if len({c[f] for c in configs}) > 1)


def _open_runs(configs: Sequence[ml_collections.ConfigDict],
               workdirs: Sequence[str], model: models.CNN,
               steps_per_epoch: int) -> list[run_lib.Run]:
  """Each run's Run, resumed from its folder; they must stand at one epoch."""
  # One optimizer for the program; each run's values are in its state.
  tx = create_optimizer(configs[0], steps_per_epoch)
  # The runs log each step's rate: one compiled schedule, not its ops one by
  # one, each compiled on its own.
  shape = jax.jit(lr_shape(configs[0], steps_per_epoch))
  runs = []
  for config, workdir in zip(configs, workdirs):
    state = with_run_values(
        create_train_state(_keys(config.seed)[0], model, tx), config)
    runs.append(run_lib.Run(
        workdir, config, jax.device_get(state),
        label=_run_label(config, configs), steps_per_epoch=steps_per_epoch,
        learning_rate=functools.partial(_scaled, shape,
                                        config.learning_rate)))
  if len({r.epoch for r in runs}) > 1:
    raise ValueError(f'runs to train together stand at different epochs: '
                     f'{[r.epoch for r in runs]}')
  return runs


def _evaluate(p_evaluate: Callable, par: parallel.Parallelism,
              state: TrainState,
              split: tuple[dict[str, jax.Array], jax.Array]
              ) -> list[dict[str, float]]:
  """Each run's accuracy and loss on a split (its data and steps),
  evaluated where the state is."""
  totals = par.get(p_evaluate(state, *split))
  return [{'accuracy': float(c / n), 'loss': float(l / n)} for c, l, n in
          zip(totals['correct'], totals['loss'], totals['count'])]


def _diverged(workdirs: Sequence[str]) -> list[dict[str, Any]] | None:
  """The summaries of runs that diverged before; None if none did."""
  summaries = [run_lib.read_summary(w) for w in workdirs]
  diverged = [s for s in summaries if s and s.get('status') == 'diverged']
  if diverged and len(diverged) < len(workdirs):
    raise ValueError('runs to train together include diverged ones: '
                     f'{[s and s.get("status") for s in summaries]}')
  for s in diverged:
    logging.error('%s earlier; pass --start_over to train it again',
                  s['reason'])
  return diverged or None


def _eval_splits(splits: dict[str, input_pipeline.Split], batch_size: int,
                 num_devices: int
                 ) -> dict[str, tuple[input_pipeline.Split, int]]:
  """Validation and test as evaluation lays them out, each with its number
  of batches: padded to one shape, so that one compiled evaluation serves
  both (each shape compiled its own)."""
  batches = {name: input_pipeline.eval_steps(splits[name], batch_size)
             for name in ('validation', 'test')}
  return {name: (input_pipeline.shard_for_eval(
      splits[name], batch_size, num_devices, steps=max(batches.values())), n)
          for name, n in batches.items()}


def _scaled(shape: optax.Schedule, peak: float, step: Any) -> jax.Array:
  return peak * shape(step)


@dataclasses.dataclass
class _Program:
  """A `train_runs` call's compiled steps and the data they run on, placed
  on the devices once."""
  par: parallel.Parallelism
  steps_per_epoch: int
  run_epoch: Callable
  epoch_plan: Callable
  evaluate: Callable
  seed_keys: Any
  train_data: Any
  eval_data: dict[str, Any]


def _compile(config: ml_collections.ConfigDict, seeds: Sequence[int],
             splits: dict[str, input_pipeline.Split]) -> _Program:
  """Places the data and compiles the steps for the runs of `seeds`."""
  par = parallel.create(config.parallelism, len(seeds))
  num_train = splits['train']['label'].shape[0]
  steps_per_epoch = num_train // config.batch_size
  if steps_per_epoch < 1:
    raise validation.ConfigError(
        f'config.batch_size must be <= the number of training examples '
        f'({num_train}); got {config.batch_size}')
  p_evaluate = compile_evaluate(par)
  return _Program(
      par=par, steps_per_epoch=steps_per_epoch,
      run_epoch=epoch_runner(config, par, steps_per_epoch),
      epoch_plan=compile_epoch_plan(par, num_train, config.batch_size),
      evaluate=functools.partial(_evaluate, p_evaluate, par),
      seed_keys=par.runs(np.stack([jax.random.key_data(_keys(s)[1])
                                   for s in seeds])),
      train_data=par.replicate(splits['train']),
      eval_data={name: (par.shard(split), par.replicate(np.int32(n)))
                 for name, (split, n) in _eval_splits(
                     splits, config.eval_batch_size,
                     par.batch_devices).items()})


def train_seeds(config: ml_collections.ConfigDict, seeds: Sequence[int],
                workdirs: Sequence[str], *,
                start_over: bool = False) -> list[dict[str, Any]]:
  """`train_runs` of `config` with each seed of `seeds` (`config.seed` is
  ignored)."""
  configs = [copy.deepcopy(config) for _ in seeds]
  for run_config, seed in zip(configs, seeds):
    run_config.seed = seed
  return train_runs(configs, workdirs, start_over=start_over)


def train_runs(configs: Sequence[ml_collections.ConfigDict],
               workdirs: Sequence[str], *,
               start_over: bool = False) -> list[dict[str, Any]]:
  """Trains one run per config, all in one compiled program.

  The configs may differ in PER_RUN_FIELDS only (else ValueError). Each run
  draws its own initialization, shuffling and augmentation from its seed and
  trains with its own learning rate, weight decay and label smoothing,
  exactly as `train_and_evaluate` with its config would (vmap over a leading
  run axis). The runs must stand at the same epoch; with
  `config.target_test_accuracy` set, only one run is taken, as each run
  would stop at its own epoch.

  Args:
    configs: one config per run.
    workdirs: one folder per run.
    start_over: discard what the folders hold and train from scratch.

  Returns:
    The runs' summaries (run.Run.finish or run.Run.diverge), in the order of
    `configs`.
  """
  start_time = time.time()
  elapsed = lambda: time.time() - start_time
  _check_runs(configs, workdirs)
  config = configs[0]
  # Folders and configs are checked before the data load, which is slow.
  workdirs = [records.check_folder(w) for w in workdirs]
  if not start_over:
    for run_config, workdir in zip(configs, workdirs):
      run_lib.check_resumable(workdir, run_config)
    diverged = _diverged(workdirs)
    if diverged:
      return diverged

  # --- Input pipeline and compiled steps ------------------------------------
  splits = input_pipeline.load_splits(config.data)
  if parallel.is_main_process():  # The other processes write no run files.
    for workdir in workdirs:
      records.claim_folder(workdir)
      if start_over:
        run_lib.clear(workdir)
  parallel.sync('run folders ready')
  program = _compile(config, [c.seed for c in configs], splits)

  # --- Model, optimizer and runs --------------------------------------------
  model = models.create_model(config.model)
  runs = _open_runs(configs, workdirs, model, program.steps_per_epoch)
  if parallel.is_main_process() and logging.level_info():  # Else unseen.
    logging.info('model:\n%s', monitor.model_table(model, config.model))
  layers = models.layer_set_name(config.model.layers)
  epoch_loop = 'scan' if scans_epoch(config) else 'python'
  logging.info('parameters: %d; runs in one program: %d; %d devices (%s), '
               '%d per run; %s layers; epoch loop: %s',
               num_params(runs[0].state.params), len(runs),
               program.par.num_devices, type(program.par).__name__,
               program.par.batch_devices, layers, epoch_loop)
  facts = {'num_params': num_params(runs[0].state.params),
           'num_devices': program.par.num_devices,
           # 1 where each device trains whole runs of the group.
           'devices_per_run': program.par.batch_devices,
           'num_processes': jax.process_count(),
           'seeds_in_program': len(runs),
           'num_train_examples': splits['train']['label'].shape[0],
           'layers': layers, 'epoch_loop': epoch_loop, 'data': splits.source}
  return _train_loop(config, runs, program, facts, elapsed)


def _train_loop(config: ml_collections.ConfigDict, runs: list[run_lib.Run],
                program: _Program, facts: dict[str, Any],
                elapsed: Callable[[], float]) -> list[dict[str, Any]]:
  """The epochs the runs still need, then the test of each run's best
  validation epoch; returns their summaries."""
  par, steps_per_epoch = program.par, program.steps_per_epoch
  target = config.target_test_accuracy
  state = par.runs(stack([r.state for r in runs]))
  summaries = [None] * len(runs)
  checkpoints = run_lib.CheckpointClock(config.checkpoint_interval_s)
  # Runs still training; a diverged run's lane keeps computing in the
  # vmapped program, but nothing of it is saved.
  live = list(range(len(runs)))
  for epoch in range(runs[0].epoch + 1, config.num_epochs + 1):
    if not live or target and all(runs[k].reached_target for k in live):
      break
    t0 = time.time()
    key, indices = program.epoch_plan(program.seed_keys,
                                      par.replicate(np.int32(epoch)))
    # Step metrics reach the host once per epoch, [steps, runs] per metric
    # (on a terminal, the loop's bar waits for each step to count it).
    with monitor.epoch_progress(
        epoch, config.num_epochs, steps_per_epoch,
        per_step=facts['epoch_loop'] == 'python') as on_step:
      state, step_metrics = program.run_epoch(state, program.train_data, key,
                                              indices, on_step)
    seconds = time.time() - t0
    val = program.evaluate(state, program.eval_data['validation'])
    # The test split is read here only to stop at a target; selection
    # still uses validation alone.
    test = (program.evaluate(state, program.eval_data['test']) if target
            else None)
    train_loss = step_metrics['loss'].mean(0)
    host_state = par.get(state)  # What the checkpoints need, and only that.
    # Every image of every run's epoch, per second.
    images_per_sec = len(runs) * steps_per_epoch * config.batch_size / seconds
    checkpoint = checkpoints.due()
    for k in list(live):
      run, loss = runs[k], float(train_loss[k])
      if not math.isfinite(loss) or loss > config.max_train_loss:
        summaries[k] = run.diverge(epoch, loss, elapsed(), **facts)
        live.remove(k)
        continue
      record = {'epoch': epoch, 'train_loss': loss,
                'train_accuracy': float(step_metrics['accuracy'][:, k].mean()),
                'val_loss': val[k]['loss'], 'val_accuracy': val[k]['accuracy'],
                'epoch_time_s': seconds, 'images_per_sec': images_per_sec,
                **({'test_accuracy': test[k]['accuracy']} if target else {})}
      run.end_epoch(unstack(host_state, k), record, elapsed(),
                    steps=jax.tree.map(lambda x: x[:, k], step_metrics),
                    checkpoint=checkpoint)

  # --- Test, once, with the epoch validation selected -----------------------
  if live:
    best = par.runs(stack([r.best for r in runs]))
    test = program.evaluate(state.replace(**best), program.eval_data['test'])
    for k in live:
      summaries[k] = runs[k].finish(test[k], elapsed(), **facts)
  return summaries
