"""Entry point: `python -m cnn_jax.main --config=configs/default.py --workdir=DIR`.

Over several processes (hosts), each runs the same command with
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I`.

Kept short on purpose: flags in, `train.train_and_evaluate` does the work.
"""

from absl import app
from absl import logging
import jax

from cnn_jax import cli
from cnn_jax import records
from cnn_jax import train
from cnn_jax import validation


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])}')
  cli.start()
  logging.info('JAX devices: %s (process %d of %d)', jax.devices(),
               jax.process_index(), jax.process_count())
  try:
    train.train_and_evaluate(cli.FLAGS.config, cli.FLAGS.workdir)
  except (validation.ConfigError, records.FolderInUse) as e:
    cli.fail(str(e))


if __name__ == '__main__':
  cli.define_flags()
  app.run(main, flags_parser=cli.parse_flags)
