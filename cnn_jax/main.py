"""Entry point: `python -m cnn_jax.main --config=configs/default.py --workdir=DIR`.

Over several processes (hosts), each runs the same command with
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I`.

Exit status: 0 for a finished run, 1 for a run that diverged (summary.json
says so), 2 for input that needs fixing (one `error:` line says which).
"""

import os

from absl import app
from absl import logging
import jax

from cnn_jax import cli
from cnn_jax import errors
from cnn_jax import train


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])}')
  cli.start()
  try:
    module = cli.load_config_module(cli.config_file())
    if hasattr(module, 'get_sweep'):
      raise errors.UserError(
          f'--config: {cli.config_file()} is a sweep config (it has '
          f'get_sweep); run it with python -m cnn_jax.sweep')
    logging.info('JAX devices: %s (process %d of %d)', jax.devices(),
                 jax.process_index(), jax.process_count())
    summary = train.train_and_evaluate(
        cli.FLAGS.config, os.path.expanduser(cli.FLAGS.workdir),
        start_over=cli.FLAGS.start_over)
  except errors.UserError as e:
    cli.fail(str(e))
  if summary['status'] == 'diverged':
    cli.fail(f'training {summary["reason"]}; summary.json records it',
             status=1)


if __name__ == '__main__':
  cli.define_flags()
  app.run(main, flags_parser=cli.parse_flags)
