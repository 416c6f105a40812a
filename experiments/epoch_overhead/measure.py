"""Host time per epoch per run: what `run.Run.end_epoch` costs.

After each epoch, each run writes its TensorBoard events (every step's loss,
accuracy and learning rate), its metrics.jsonl line and an orbax
checkpoint. On a CPU that is little beside a 12-20 s epoch; on a GPU, where
an epoch of the default recipe takes a fraction of a second, it can be most
of the run. This times it apart from any training: real `Run` objects of
the default config's shape (550 steps an epoch, its real TrainState), each
epoch's `end_epoch` for every run in turn after a pause of `--device_s`
seconds, in which the main thread sleeps as it would wait for a GPU (so
work a library does in background threads can overlap it), with
checkpoints when `run.CheckpointClock` says, as in training. Reported: the
median over epochs of the wall time beyond the pauses, per epoch and run,
and the mean with each run's `finish` (which waits for unfinished
checkpoints) added.

  python experiments/epoch_overhead/measure.py [--runs=3] [--epochs=20]
      [--device_s=0.0]

It imports `cnn_jax` from the current directory, so running it from a
checkout of another commit measures that commit.
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.getcwd())

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from cnn_jax import models  # pylint: disable=g-import-not-at-top
from cnn_jax import run as run_lib
from cnn_jax import train
from configs import default


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--runs', type=int, default=3)
  parser.add_argument('--epochs', type=int, default=20)
  parser.add_argument('--device_s', type=float, default=0.0)
  args = parser.parse_args()

  config = default.get_config()
  steps = 55_000 // config.batch_size
  model = models.create_model(config.model)
  tx = train.create_optimizer(config, steps)
  state = jax.device_get(train.create_train_state(jax.random.key(0), model,
                                                  tx))
  rng = np.random.default_rng(0)
  with tempfile.TemporaryDirectory() as folder:
    runs = [run_lib.Run(os.path.join(folder, str(k)), config, state,
                        steps_per_epoch=steps,
                        learning_rate=train.learning_rate_fn(config, steps))
            for k in range(args.runs)]
    # As train.train_seeds decides; commits before e5eb0f3 checkpoint every
    # epoch and have no clock.
    clock = (run_lib.CheckpointClock(config.checkpoint_interval_s)
             if hasattr(run_lib, 'CheckpointClock') else None)
    per_epoch = []
    for epoch in range(1, args.epochs + 1):
      time.sleep(args.device_s)
      start = time.perf_counter()
      when = {'checkpoint': clock.due()} if clock else {}
      for run in runs:
        step_metrics = {name: rng.random(steps).astype(np.float32)
                        for name in ('loss', 'accuracy')}
        record = {'epoch': epoch, 'train_loss': 0.5, 'train_accuracy': 0.8,
                  'val_loss': 0.4, 'val_accuracy': epoch / 100,
                  'epoch_time_s': 1.0, 'images_per_sec': 1e5}
        run.end_epoch(state, record, 1.0, step_metrics, **when)
      per_epoch.append(time.perf_counter() - start)
    time.sleep(args.device_s)  # The test split's evaluation.
    start = time.perf_counter()
    for run in runs:
      run.finish({'accuracy': 0.9, 'loss': 0.3}, 1.0)
    finish = time.perf_counter() - start
  median = float(np.median(per_epoch)) / args.runs
  mean = (sum(per_epoch) + finish) / args.epochs / args.runs
  print(f'{args.runs} runs x {args.epochs} epochs, pauses of '
        f'{args.device_s} s: {median * 1e3:.1f} ms per epoch and run '
        f'(median); {mean * 1e3:.1f} ms mean with the runs\' finish '
        f'({finish * 1e3:.0f} ms in all)')


if __name__ == '__main__':
  main()
