"""Seconds per epoch of k seeds in one program: vmapped, or unrolled.

On an H200, 3 seeds vmapped in one program (`train.compile_train_epoch`,
what the sweep runs) trained 414,000-471,000 img/s in all (the sweep's
groups), one seed alone ~455,000: vmapping seeds gained nothing per image.
The suspicion: vmap turns each conv over the seeds into a grouped
convolution (feature_group_count, and batch_group_count for the kernel
gradient), which cuDNN runs slowly (README.md here: it does not). This
times the steady-state epoch of the default recipe (scanned), each variant
one compiled program over a seed axis built as `train.train_seeds` builds
it:

- `k=K vmap`: `train.compile_train_epoch` itself;
- `k=K unrolled`: the same map, but inside it a Python loop over the seeds
  calls `train.train_epoch` on each seed's slice, so each conv is plain;
- `layers=cpu`: the project's own Conv and BatchNorm (cnn_jax/layers.py).

Each line: compile seconds, seconds per epoch (mean of --epochs after one
warm-up epoch, on the same epoch plan), images/s of all seeds, that
relative to k=1, and the convolutions with a group count > 1 in the
program JAX emits and in the one XLA compiled. Unrolled and `layers=cpu`
variants also give the largest parameter difference to the vmapped variant
of the same k after the warm-up epoch: they must train the same seeds.
A variant that fails prints its error and the others still run.

  python benchmarks/vmap_seeds_gpu/bench.py DATA_DIR [--epochs=3]
      [--num_train_examples=N] [--budget_s=S]

DATA_DIR holds the decoded splits (`.gpu/tfds` from `make offline-bundle`); with OUT
set, the lines also go to $OUT/vmap_seeds.txt.
"""

import argparse
import copy
import functools
import os
import re
import sys
import time

# The repo root, for `configs` (and this checkout's cnn_jax) from any folder.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from cnn_jax import input_pipeline  # pylint: disable=g-import-not-at-top
from cnn_jax import models  # pylint: disable=g-import-not-at-top
from cnn_jax import parallel  # pylint: disable=g-import-not-at-top
from cnn_jax import train  # pylint: disable=g-import-not-at-top
from configs import default  # pylint: disable=g-import-not-at-top

# name, seeds, layers, unrolled; the most telling first, in case time runs
# out. 'flax' is what layers='auto' picks on a GPU: a CPU trial runs the same.
VARIANTS = (('k=1 vmap', 1, 'flax', False),
            ('k=3 vmap', 3, 'flax', False),
            ('k=3 unrolled', 3, 'flax', True),
            ('k=3 vmap, layers=cpu', 3, 'cpu', False),
            ('k=6 vmap', 6, 'flax', False),
            ('k=6 unrolled', 6, 'flax', True))
_GROUPS = re.compile(r'(feature|batch)_group_count\s*=\s*(\d+)')


def compile_unrolled_epoch(config, par, k: int):
  """As `train.compile_train_epoch`, with a Python loop over the k seeds in
  place of vmap: one program still, each seed's convs ordinary ones."""
  options = train._train_options(config)  # pylint: disable=protected-access
  epoch = functools.partial(train.train_epoch, **options)

  def seeds(state, data, key, indices):
    outs = [epoch(train.unstack(state, s), data, key[s], indices[s])
            for s in range(k)]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)

  return par.map(seeds, (train.REPLICATED, train.REPLICATED,
                         train.REPLICATED, train.SHARDED),
                 (train.REPLICATED, train.REPLICATED), donate_argnums=(0,))


def grouped_convs(hlo: str) -> int:
  """Convolutions in HLO text with a feature or batch group count > 1."""
  return sum(int(n) > 1 for _, n in _GROUPS.findall(hlo))


def max_difference(a, b) -> float:
  """Largest |a - b| over two parameter trees, the conv biases aside: the
  BatchNorm after each conv cancels them, so their gradient is rounding
  noise, which Adam scales to steps of the learning rate."""
  return max(float(np.abs(a[m][p] - b[m][p]).max()) for m in a for p in a[m]
             if not (m.startswith('conv') and p == 'bias'))


def measure(config, par, data, plan, tx, k: int, layers: str,
            unrolled: bool, epochs: int) -> dict:
  """Times one variant; returns its numbers, and its parameters and mean
  training loss after the warm-up epoch."""
  config = copy.deepcopy(config)
  config.model.layers = layers
  model = models.create_model(config.model)
  keys = [train._keys(s) for s in range(k)]  # pylint: disable=protected-access
  states = [train.create_train_state(init, model, tx) for init, _ in keys]
  state = par.replicate(train.stack(jax.device_get(states)))
  seed_keys = par.replicate(np.stack([jax.random.key_data(d) for _, d in keys]))
  key, indices = plan(seed_keys, par.replicate(np.int32(1)))
  fn = (compile_unrolled_epoch(config, par, k) if unrolled
        else train.compile_train_epoch(config, par))
  t0 = time.perf_counter()
  lowered = fn.lower(state, data, key, indices)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  groups = (grouped_convs(lowered.as_text()), grouped_convs(compiled.as_text()))
  state, metrics = compiled(state, data, key, indices)  # Warm-up.
  params, loss = par.get((state.params, metrics['loss']))  # Waits for it.
  t0 = time.perf_counter()
  for _ in range(epochs):
    state, _ = compiled(state, data, key, indices)
  jax.block_until_ready(state)
  epoch_s = (time.perf_counter() - t0) / epochs
  # indices: [devices, seeds, steps, batch / devices], all seeds' images.
  return {'compile_s': compile_s, 'epoch_s': epoch_s,
          'images_s': indices.size / epoch_s, 'groups': groups,
          'params': params, 'loss': float(loss.mean())}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('data_dir')
  parser.add_argument('--epochs', type=int, default=3)
  parser.add_argument('--num_train_examples', type=int, default=-1)
  parser.add_argument('--budget_s', type=float, default=0,
                      help='start no variant after this many seconds; 0: all')
  args = parser.parse_args()
  start = time.perf_counter()
  path = os.path.join(os.environ['OUT'], 'vmap_seeds.txt') if os.environ.get(
      'OUT') else None

  def emit(line):
    print(line, flush=True)
    if path:
      with open(path, 'a') as f:
        f.write(line + '\n')

  emit(f'jax {jax.__version__}, {jax.devices()}')
  config = default.get_config()
  config.epoch_loop = 'scan'
  config.data.data_dir = args.data_dir
  config.data.num_train_examples = args.num_train_examples
  par = parallel.create(config.parallelism)
  split = input_pipeline.load_splits(config.data)['train']
  num_train = split['label'].shape[0]
  data = par.replicate(split)
  # One optimizer and plan for all: each new one compiles again.
  tx = train.create_optimizer(config, num_train // config.batch_size)
  plan = train.compile_epoch_plan(par, num_train, config.batch_size)
  emit(f'{num_train} training images, batch {config.batch_size}, '
       f'{args.epochs} epochs timed; grouped convs: those with a group '
       f'count > 1, as JAX emits them / as XLA compiled them')
  results = {}
  for name, k, layers, unrolled in VARIANTS:
    if args.budget_s and time.perf_counter() - start > args.budget_s:
      emit(f'{name:<21} skipped: past --budget_s')
      continue
    try:
      r = measure(config, par, data, plan, tx, k, layers, unrolled,
                  args.epochs)
      same_k = results.get(f'k={k} vmap')
      results[name] = r
      one = results.get('k=1 vmap')
      relative = f'x{r["images_s"] / one["images_s"]:.2f}' if one else 'x-'
      line = (f'{name:<21} compile {r["compile_s"]:6.2f} s  '
              f'{r["epoch_s"]:8.4f} s/epoch  {r["images_s"]:>9,.0f} img/s  '
              f'{relative} vs k=1  '
              f'grouped convs {r["groups"][0]}/{r["groups"][1]}  '
              f'loss {r["loss"]:.4f}')
      if same_k:
        diff = max_difference(r['params'], same_k['params'])
        line += f'  max|params - k={k} vmap| {diff:.1e}'
      emit(line)
    except Exception as e:  # pylint: disable=broad-except
      error = (str(e).strip().splitlines() or [''])[0][:300]
      emit(f'{name:<21} FAILED {type(e).__name__}: {error}')
  emit(f'total {time.perf_counter() - start:.1f} s')


if __name__ == '__main__':
  main()
