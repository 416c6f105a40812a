"""Entry point: `python -m cnn_jax.main --config=configs/default.py [--workdir=DIR]`.

Without --workdir the run goes to workdirs/<config file name> (`cli.workdir`).

Over several processes (hosts), each runs the same command with
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I`.

Exit status: 0 for a finished run, 1 for a run that diverged (summary.json
says so), 2 for input that needs fixing (one `error:` line says which; also
the other processes of a multi-process run not all there within
--initialization_timeout), 130 when interrupted (Ctrl-C): the same command
again resumes from the last checkpoint.
"""

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
    workdir = cli.workdir()
    module = cli.load_config_module(cli.config_file())
    if hasattr(module, 'get_sweep'):
      raise errors.UserError(
          f'--config: {cli.config_file()} is a sweep config (it has '
          f'get_sweep); run it with python -m cnn_jax.sweep')
    logging.info('JAX devices: %s (process %d of %d)', jax.devices(),
                 jax.process_index(), jax.process_count())
    summary = train.train_and_evaluate(
        cli.FLAGS.config, workdir, start_over=cli.FLAGS.start_over)
  except errors.UserError as e:
    cli.fail(str(e))
  if summary['status'] == 'diverged':
    cli.fail(f'training {summary["reason"]}; summary.json records it',
             status=1)


def _how_to_resume() -> str:
  # --start_over again would discard what the interrupted run saved.
  if cli.FLAGS.start_over:
    return ('run the command again without --start_over to resume from the '
            'last checkpoint')
  return 'run the same command again to resume from the last checkpoint'


if __name__ == '__main__':
  cli.define_flags()
  cli.run(main, _how_to_resume)
