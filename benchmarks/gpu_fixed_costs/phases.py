"""Seconds of each phase before a run's first epoch, in one fresh process:
the parts of `train.train_seeds` that come before its compiled epoch,
timed one by one (each result waited for), on whatever JAX sees.

  python benchmarks/gpu_fixed_costs/phases.py DATA_DIR
"""

import sys
import time

T0 = time.perf_counter()
import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from cnn_jax import input_pipeline  # pylint: disable=g-import-not-at-top
from cnn_jax import models  # pylint: disable=g-import-not-at-top
from cnn_jax import monitor  # pylint: disable=g-import-not-at-top
from cnn_jax import parallel  # pylint: disable=g-import-not-at-top
from cnn_jax import train  # pylint: disable=g-import-not-at-top
from configs import default  # pylint: disable=g-import-not-at-top


def main(data_dir: str) -> None:
  last = [T0]

  def phase(name, value=None):
    jax.block_until_ready(value)
    now = time.perf_counter()
    print(f'{name:<28} {now - last[0]:7.3f} s', flush=True)
    last[0] = now
    return value

  phase('import jax and cnn_jax')
  phase('jax.devices()', jax.devices())
  config = default.get_config()
  config.data.data_dir = data_dir
  splits = phase('load_splits', input_pipeline.load_splits(config.data))
  par = parallel.create(config.parallelism)
  phase('replicate train data', par.replicate(splits['train']))
  steps = {n: input_pipeline.eval_steps(splits[n], config.eval_batch_size)
           for n in ('validation', 'test')}
  phase('shard eval data', [par.shard(input_pipeline.shard_for_eval(
      splits[n], config.eval_batch_size, par.num_devices,
      steps=max(steps.values()))) for n in steps])
  model = models.create_model(config.model)
  tx = train.create_optimizer(config, 550)
  keys = train._keys  # pylint: disable=protected-access
  init_key = phase('keys, seed 0', keys(0))[0]
  phase('keys, seed 1', keys(1))
  state = train.create_train_state
  phase('create_train_state', state(init_key, model, tx))
  phase('create_train_state again', state(keys(1)[0], model, tx))
  schedule = jax.jit(train.learning_rate_fn(config, 550))
  phase('learning rates of an epoch', schedule(np.arange(550)))
  phase('model_table', monitor.model_table(model, config.model))
  phase('model_table again', monitor.model_table(model, config.model))
  print(f'{"total":<28} {time.perf_counter() - T0:7.3f} s')


if __name__ == '__main__':
  main(sys.argv[1])
