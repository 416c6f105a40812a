"""JAX against the seed's PyTorch model, side by side, in one run.

  python -m cnn_jax.benchmark --workdir=benchmarks/cpu \
      --manual_dir=../shared/data/fashion_mnist

Three measurements, written to WORKDIR/benchmark.json and printed as a table
(also WORKDIR/benchmark.md):

1. Training throughput, steady state after compilation: the trainer's own
   compiled step (`train.compile_train_batch`) against the seed's `convnet1`
   (`cnn_jax.torch_reference`), same batch size, same image shape, Adam at
   1e-3, no augmentation. XLA's CPU backend uses every core; --threads sets
   PyTorch's to the same count. Rounds alternate the two;
   each side's median over rounds of its best timing in a round counts.
2. Time to a test accuracy (0.9): whole processes, timed from launch to exit
   (start-up, compilation and data included). JAX runs `cnn_jax.main` with
   --fast_config; PyTorch runs the seed's recipe. Both read the test set once
   per epoch and stop at the target.
3. K seeds in one compiled program (`train.train_seeds`, vmapped) against
   the same K runs one after another (`train.train_and_evaluate`), with the
   largest per-seed difference in their results.

PyTorch runs in subprocesses of its own, so the two libraries' thread pools
never share the CPU; it is an optional extra (`pip install -e .[bench]`).
Without it, the PyTorch numbers are null. On a GPU both sides run there:
PyTorch with its data on the GPU, eager, and (--torch_compile, on by default
there) a second throughput row with torch.compile. The JAX side's recipe is
configs/seed_recipe.py. --workdir defaults to experiments/benchmark/<device>.
"""

import copy
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any, Callable

from absl import flags
from absl import logging
import jax
import ml_collections
import numpy as np

from cnn_jax import cli
from cnn_jax import errors
from cnn_jax import input_pipeline
from cnn_jax import models
from cnn_jax import parallel
from cnn_jax import records
from cnn_jax import train
from cnn_jax import validation

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The issues' targets, as ratios from one run of this command: on a CPU
# (issue 5) and on a GPU (issue 11, same GPU for both libraries).
TARGETS = {
    'cpu': {'throughput_ratio': ('>=', 1.5), 'time_to_90_ratio': ('<=', 0.4),
            'vmap_seeds_speedup': ('>=', 1.3)},
    'gpu': {'throughput_ratio': ('>=', 5.0), 'time_to_90_ratio': ('<=', 0.4)},
}


def _seed_recipe(manual_dir: str,
                 batch_size: int) -> ml_collections.ConfigDict:
  """configs/seed_recipe.py of this checkout at the benchmark's batch size."""
  config = cli.load_config_module(
      os.path.join(ROOT, 'configs', 'seed_recipe.py')).get_config()
  config.batch_size = batch_size
  config.data.manual_dir = manual_dir
  return config


def device_name() -> str:
  """'cpu', or the accelerator's kind as a folder name ('nvidia-h200')."""
  if jax.default_backend() == 'cpu':
    return 'cpu'
  kind = jax.local_devices()[0].device_kind.lower()
  return '-'.join(''.join(c if c.isalnum() else ' ' for c in kind).split())


def torch_device() -> str:
  """Where PyTorch runs: the GPU JAX uses, else the CPU."""
  return 'cuda' if jax.default_backend() == 'gpu' else 'cpu'


def jax_step_timer(config: ml_collections.ConfigDict,
                   steps: int) -> Callable[[], float]:
  """Compiles the trainer's step; returns a function timing `steps` of it.

  The function returns training images/s. Random uint8 images of
  Fashion-MNIST's shape, held on the device as the trainer holds the real
  ones; one seed.
  """
  par = parallel.create(config.parallelism)
  batch = config.batch_size
  n = batch * steps
  rng = np.random.default_rng(0)
  data = {'image': rng.integers(0, 256, (n,) + input_pipeline.IMAGE_SHAPE,
                                np.uint8),
          'label': rng.integers(0, 10, n).astype(np.int32)}
  model = models.create_model(config.model)
  state = jax.device_get(train.create_train_state(
      jax.random.key(0), model, train.create_optimizer(config, steps)))
  state = par.replicate(train.stack([state]))
  # [devices, seeds=1, steps, batch // devices]: step t's batch is the
  # examples t * batch ... (t + 1) * batch - 1, in order.
  indices = np.arange(n, dtype=np.int32).reshape(steps, par.num_devices, -1)
  indices = par.shard(indices.transpose(1, 0, 2)[:, None])
  key = par.replicate(jax.random.key_data(jax.random.split(jax.random.key(0),
                                                          1)))
  step_ids = [par.replicate(np.int32(t)) for t in range(steps)]
  p_step = train.compile_train_batch(config, par)
  data = par.replicate(data)

  def run(count: int) -> float:
    nonlocal state
    t0 = time.perf_counter()
    for step_id in step_ids[:count]:
      state, metrics = p_step(state, data, key, indices, step_id)
    jax.block_until_ready(metrics)
    return time.perf_counter() - t0

  run(min(10, steps))  # Compilation and warm-up.
  return lambda: n / run(steps)


def _torch(*args: str, timeout: float | None = None
           ) -> dict[str, Any] | None:
  """Runs cnn_jax.torch_reference in a fresh process; None without PyTorch."""
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    logging.warning('PyTorch is not installed (pip install -e .[bench]); '
                    'its numbers are null')
    return None
  argv = [sys.executable, '-m', 'cnn_jax.torch_reference', *args,
          f'--device={torch_device()}']
  out = _run(argv, timeout)
  try:
    return json.loads(out.stdout.strip().splitlines()[-1])
  except (IndexError, json.JSONDecodeError) as e:
    raise SubprocessError(f'{" ".join(argv[1:4])} printed no JSON result '
                          f'line ({e})') from None


class SubprocessError(RuntimeError):
  """A timed subprocess failed, timed out or printed no result; the message
  says which (a failure ends with its last stderr line)."""


def _run(argv: list[str], timeout: float | None = None
         ) -> subprocess.CompletedProcess:
  try:
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True,
                         timeout=timeout)
  except subprocess.TimeoutExpired:
    raise SubprocessError(f'{" ".join(argv[1:4])} took over {timeout:.0f} s '
                          'and was stopped') from None
  if out.returncode:
    last = (out.stderr.strip().splitlines() or ['(no output)'])[-1]
    raise SubprocessError(f'{" ".join(argv[1:4])} exited with status '
                          f'{out.returncode}: {last}')
  return out


def _timed(argv: list[str]) -> float:
  """Wall seconds of a whole subprocess, launch to exit."""
  t0 = time.perf_counter()
  _run(argv)
  return time.perf_counter() - t0


def jax_time_to_target(config_path: str, data: ml_collections.ConfigDict,
                       target: float, workdir: str) -> dict[str, Any]:
  """`python -m cnn_jax.main` with a target accuracy, as a user runs it."""
  shutil.rmtree(workdir, ignore_errors=True)
  seconds = _timed([sys.executable, '-m', 'cnn_jax.main',
                    f'--config={config_path}', f'--workdir={workdir}',
                    f'--config.data.manual_dir={data.manual_dir}',
                    f'--config.data.data_dir={data.data_dir}',
                    f'--config.target_test_accuracy={target}',
                    # A first run's time: nothing compiled beforehand.
                    '--compilation_cache='])
  with open(os.path.join(workdir, records.SUMMARY_FILE)) as f:
    summary = json.load(f)
  with open(os.path.join(workdir, records.METRICS_FILE)) as f:
    curve = [json.loads(line)['test_accuracy'] for line in f]
  return {'seconds': seconds, 'reached': summary['target_epoch'] is not None,
          'epochs': summary['epochs_completed'], 'test_accuracy': curve}


def torch_time_to_target(manual_dir: str, target: float, threads: int
                         ) -> dict[str, Any] | None:
  argv = ['time_to_target', f'--manual_dir={manual_dir}',
          f'--target={target}', '--batch_size=100', f'--threads={threads}']
  t0 = time.perf_counter()
  result = _torch(*argv)
  if result is not None:
    result['seconds'] = time.perf_counter() - t0
  return result


def seeds_in_one_program(config: ml_collections.ConfigDict, num_seeds: int,
                         workdir: str) -> dict[str, Any]:
  """K runs vmapped in one program against the same K runs in sequence."""
  seeds = list(range(num_seeds))
  shutil.rmtree(workdir, ignore_errors=True)
  t0 = time.perf_counter()
  together = train.train_seeds(
      config, seeds, [os.path.join(workdir, f'vmap/seed={s}') for s in seeds])
  vmap_seconds = time.perf_counter() - t0
  t0 = time.perf_counter()
  apart = []
  for s in seeds:
    run_config = copy.deepcopy(config)
    run_config.seed = s
    apart.append(train.train_and_evaluate(
        run_config, os.path.join(workdir, f'sequential/seed={s}')))
  sequential_seconds = time.perf_counter() - t0
  diff = {key: max(abs(a[key] - b[key]) for a, b in zip(together, apart))
          for key in ('test_accuracy', 'test_loss', 'best_val_accuracy')}
  return {'vmap_seconds': vmap_seconds,
          'sequential_seconds': sequential_seconds,
          'speedup': sequential_seconds / vmap_seconds,
          'max_abs_diff': diff,
          'test_accuracy': {'vmap': [r['test_accuracy'] for r in together],
                            'sequential': [r['test_accuracy'] for r in apart]}}


def _ratio(a: float | None, b: float | None) -> float | None:
  return None if a is None or b is None else a / b


def _fmt(x: Any, spec: str, suffix: str = '') -> str:
  return 'n/a' if x is None else format(x, spec) + suffix


def table(result: dict[str, Any]) -> str:
  """The benchmark's markdown table."""
  r = result
  target = lambda key: r.get('targets', {}).get(key, '')
  rows = [
      ('Training throughput (img/s, batch '
       f'{r["batch_size"]})', _fmt(r['jax_train_images_per_sec'], ',.0f'),
       _fmt(r['torch_train_images_per_sec'], ',.0f'),
       _fmt(r['throughput_ratio'], '.2f', 'x'), target('throughput_ratio')),
      ('PyTorch torch.compile, same loop (img/s)', '',
       _fmt(r.get('torch_compiled_images_per_sec'), ',.0f'),
       _fmt(r.get('compiled_throughput_ratio'), '.2f', 'x'), ''),
      ('PyTorch step alone, no DataLoader (img/s)', '',
       _fmt(r['torch_step_only_images_per_sec'], ',.0f'),
       _fmt(_ratio(r['jax_train_images_per_sec'],
                   r['torch_step_only_images_per_sec']), '.2f', 'x'), ''),
      (f'Time to {r["target_accuracy"]:.0%} test accuracy, whole process (s)',
       _fmt(r['jax_time_to_90_s'], '.1f'), _fmt(r['torch_time_to_90_s'], '.1f'),
       _fmt(r['time_to_90_ratio'], '.2f', 'x'), target('time_to_90_ratio')),
      ('Epochs to reach it', _fmt(r['jax_epochs_to_90'], 'd'),
       _fmt(r['torch_epochs_to_90'], 'd'), '', ''),
      (f'{r["num_seeds"]} seeds x {r["seed_epochs"]} epochs: one vmapped '
       'program vs in sequence (s)', _fmt(r['vmap_seeds_seconds'], '.1f'),
       _fmt(r['sequential_seeds_seconds'], '.1f', ' (JAX, sequential)'),
       _fmt(r['vmap_seeds_speedup'], '.2f', 'x'),
       target('vmap_seeds_speedup')),
  ]
  lines = ['| Measurement | JAX (this project) | PyTorch (seed) | Ratio | '
           'Target |', '|---|---:|---:|---:|---|']
  lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
  lines.append('')
  where = ('the CPU' if r.get('torch_device', 'cpu') == 'cpu'
           else 'the same GPU, data on the GPU')
  torch = (f'PyTorch {r["torch_version"]} on {where} with {r["threads"]} '
           f'threads' if r['torch_version'] else 'PyTorch not installed')
  lines.append(f'JAX on {r["jax_device"]} (XLA uses every core); {torch}; '
               f'{r["cpu_count"]} CPU cores. Largest per-seed difference, vmapped vs sequential: '
               f'{json.dumps(r["vmap_seeds_max_abs_diff"])}.')
  return '\n'.join(lines) + '\n'


def _default_config() -> ml_collections.ConfigDict:
  """configs/default.py of this checkout, whatever the working directory."""
  spec = importlib.util.spec_from_file_location(
      'default_config', os.path.join(ROOT, 'configs', 'default.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


# torch.compile can hang or fail on a new GPU stack; it is an extra row, so
# it is timed last and given a bounded time.
COMPILE_TIMEOUT_S = 180


def _torch_compiled(batch_size: int, steps: int, repeats: int,
                    threads: int) -> dict[str, Any] | None:
  """torch.compile's throughput; {'error': ...} where it does not work."""
  try:
    return _torch('throughput', f'--batch_size={batch_size}',
                  f'--steps={steps}', f'--repeats={repeats}',
                  f'--threads={threads}', '--compile',
                  timeout=COMPILE_TIMEOUT_S)
  except SubprocessError as e:
    return {'error': str(e)}


def _throughput(recipe: ml_collections.ConfigDict, *, batch_size: int,
                steps: int, repeats: int, rounds: int, threads: int
                ) -> tuple[float, list[float], list[Any], dict[str, Any]]:
  """JAX's median images/s, each side's rounds, and PyTorch's medians."""
  # Rounds alternate the two libraries, so that a slow spell of the machine
  # (this VM's speed drifts) does not fall on one side only.
  jax_timer = jax_step_timer(recipe, steps)
  jax_rounds, torch_rounds = [], []
  for _ in range(rounds):
    jax_rounds.append(max(jax_timer() for _ in range(repeats)))
    torch_rounds.append(_torch('throughput', f'--batch_size={batch_size}',
                               f'--steps={steps}', f'--repeats={repeats}',
                               f'--threads={threads}'))
  jax_rate = float(np.median(jax_rounds))
  torch_rates = {}
  if torch_rounds[0] is not None:
    torch_rates = {key: float(np.median([r[key] for r in torch_rounds]))
                   for key in ('train_images_per_sec',
                               'step_only_images_per_sec')}
    torch_rates['torch_version'] = torch_rounds[0]['torch_version']
  # Logged as each result lands, so that a run cut short keeps them.
  logging.info('throughput: JAX %.0f, PyTorch %s images/s', jax_rate,
               _fmt(torch_rates.get('train_images_per_sec'), '.0f'))
  return jax_rate, jax_rounds, torch_rounds, torch_rates


def _targets(result: dict[str, Any]) -> dict[str, Any]:
  """The targets of this device's kind, and whether `result` meets each."""
  targets = TARGETS['cpu' if torch_device() == 'cpu' else 'gpu']
  return {
      'targets': {k: f'{op} {bar}x' for k, (op, bar) in targets.items()},
      'targets_met': {
          key: (None if result[key] is None else
                (result[key] >= bar if op == '>=' else result[key] <= bar))
          for key, (op, bar) in targets.items()}}


def run_benchmark(workdir: str, manual_dir: str, *, data_dir: str = '',
                  batch_size: int,
                  steps: int, repeats: int, rounds: int, threads: int,
                  target: float,
                  fast_config: str, num_seeds: int, seed_epochs: int,
                  torch_compile: bool = False) -> dict[str, Any]:
  """All three measurements; returns what benchmark.json holds."""
  workdir = os.path.abspath(workdir)
  base = _default_config()
  base.data.manual_dir = manual_dir
  base.data.data_dir = data_dir
  validation.check_config(base)
  recipe = _seed_recipe(manual_dir, batch_size)
  recipe.data.data_dir = data_dir
  validation.check_config(recipe)
  os.makedirs(workdir, exist_ok=True)
  # Prepared once, untimed, as TFDS prepares a dataset once per machine.
  input_pipeline.load_splits(base.data)

  logging.info('throughput ...')
  jax_rate, jax_rounds, torch_rounds, torch_rates = _throughput(
      recipe, batch_size=batch_size, steps=steps, repeats=repeats,
      rounds=rounds, threads=threads)

  logging.info('time to %.2f test accuracy ...', target)
  jax_t90 = jax_time_to_target(os.path.abspath(fast_config), base.data,
                               target, os.path.join(workdir, 'time_to_target'))
  torch_t90 = torch_time_to_target(manual_dir, target, threads) or {}
  logging.info('time to %.2f: JAX %.1f s (%s), PyTorch %s s (%s)', target,
               jax_t90['seconds'], 'reached' if jax_t90['reached'] else
               'not reached', _fmt(torch_t90.get('seconds'), '.1f'),
               'reached' if torch_t90.get('reached') else 'not reached')

  logging.info('%d seeds in one program ...', num_seeds)
  seed_config = copy.deepcopy(base)
  seed_config.num_epochs = seed_epochs
  seeds = seeds_in_one_program(seed_config, num_seeds,
                               os.path.join(workdir, 'seeds'))
  logging.info('%d seeds in one program: %.2fx', num_seeds, seeds['speedup'])

  compiled = None
  if torch_compile and torch_rates:
    logging.info('torch.compile throughput ...')
    compiled = _torch_compiled(batch_size, steps, repeats, threads)
    logging.info('torch.compile: %s', compiled)

  jax_t = jax_t90['seconds'] if jax_t90['reached'] else None
  torch_t = torch_t90.get('seconds') if torch_t90.get('reached') else None
  result = {
      'jax_train_images_per_sec': jax_rate,
      'throughput_rounds': {'jax': jax_rounds, 'torch': torch_rounds},
      'torch_train_images_per_sec': torch_rates.get('train_images_per_sec'),
      'torch_step_only_images_per_sec': torch_rates.get(
          'step_only_images_per_sec'),
      'throughput_ratio': _ratio(jax_rate,
                                 torch_rates.get('train_images_per_sec')),
      'torch_compiled': compiled,
      'torch_compiled_images_per_sec': (compiled or {}).get(
          'train_images_per_sec'),
      'compiled_throughput_ratio': _ratio(
          jax_rate, (compiled or {}).get('train_images_per_sec')),
      'jax_time_to_90_s': jax_t,
      'torch_time_to_90_s': torch_t,
      'time_to_90_ratio': _ratio(jax_t, torch_t),
      'jax_epochs_to_90': jax_t90['epochs'] if jax_t else None,
      'torch_epochs_to_90': torch_t90.get('epochs') if torch_t else None,
      'jax_test_accuracy_by_epoch': jax_t90['test_accuracy'],
      'torch_test_accuracy_by_epoch': torch_t90.get('test_accuracy'),
      'vmap_seeds_speedup': seeds['speedup'],
      'vmap_seeds_seconds': seeds['vmap_seconds'],
      'sequential_seeds_seconds': seeds['sequential_seconds'],
      'vmap_seeds_max_abs_diff': seeds['max_abs_diff'],
      'vmap_seeds_test_accuracy': seeds['test_accuracy'],
      'num_seeds': num_seeds, 'seed_epochs': seed_epochs,
      'batch_size': batch_size, 'target_accuracy': target,
      'fast_config': os.path.relpath(os.path.abspath(fast_config), ROOT),
      'threads': threads, 'cpu_count': os.cpu_count(),
      'torch_device': torch_device(), 'device': device_name(),
      'jax_device': str(jax.local_devices()[0].device_kind),
      'jax_devices': jax.local_device_count(),
      'torch_version': torch_rates.get('torch_version'),
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'versions': records.versions(),
      'git_commit': records.git_commit(),
  }
  result.update(_targets(result))
  records.write_json(os.path.join(workdir, 'benchmark.json'), result)
  with open(os.path.join(workdir, 'benchmark.md'), 'w') as f:
    f.write(table(result))
  return result


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])}')
  cli.start()
  manual_dir = os.path.abspath(FLAGS.manual_dir)
  missing = input_pipeline.missing_manual_files(manual_dir)
  if missing:
    cli.fail(f'--manual_dir must hold {", ".join(input_pipeline.MANUAL_FILES)}'
             f' (missing: {", ".join(missing)})')
  if not os.path.isfile(FLAGS.fast_config):
    cli.fail(f'--fast_config must be a config file; got {FLAGS.fast_config}')
  for name in ('batch_size', 'steps', 'repeats', 'rounds', 'threads',
               'num_seeds', 'seed_epochs'):
    if FLAGS[name].value < 1:
      cli.fail(f'--{name} must be >= 1; got {FLAGS[name].value}')
  if not 0 < FLAGS.target < 1:
    cli.fail(f'--target must be in (0, 1); got {FLAGS.target}')
  workdir = os.path.expanduser(FLAGS.workdir or os.path.join(
      ROOT, 'experiments', 'benchmark', device_name()))
  torch_compile = (torch_device() == 'cuda' if FLAGS.torch_compile == 'auto'
                   else FLAGS.torch_compile == 'true')
  try:
    result = run_benchmark(
        workdir, manual_dir, data_dir=FLAGS.data_dir,
        batch_size=FLAGS.batch_size,
        steps=FLAGS.steps, repeats=FLAGS.repeats, rounds=FLAGS.rounds,
        threads=FLAGS.threads,
        target=FLAGS.target, fast_config=FLAGS.fast_config,
        num_seeds=FLAGS.num_seeds, seed_epochs=FLAGS.seed_epochs,
        torch_compile=torch_compile)
  except (errors.UserError, SubprocessError) as e:
    cli.fail(str(e))
  print(table(result))


if __name__ == '__main__':
  cli.define_flags(config=False, distributed=False, workdir_required=False)
  flags.DEFINE_enum('torch_compile', 'auto', ['auto', 'true', 'false'],
                    'Also time PyTorch with torch.compile (a second '
                    'throughput row). auto: on a GPU only.')
  flags.DEFINE_string('manual_dir', os.path.join(
      ROOT, '..', 'shared', 'data', 'fashion_mnist'),
                      'Folder with the four Fashion-MNIST IDX .gz files.')
  flags.DEFINE_string('data_dir', '', "TFDS data_dir of the JAX runs ('' = "
                      "TFDS's default); may hold only the decoded-split "
                      'cache, on a machine without TensorFlow.')
  flags.DEFINE_integer('batch_size', 128, 'Batch for the throughput test.')
  flags.DEFINE_integer('steps', 100, 'Steps per throughput timing.')
  flags.DEFINE_integer('repeats', 3, 'Timings per round; the best counts.')
  flags.DEFINE_integer('rounds', 3, 'Alternating JAX/PyTorch throughput '
                       'rounds; the median of each side counts.')
  flags.DEFINE_integer('threads', 2, "PyTorch's intra-op threads.")
  flags.DEFINE_float('target', 0.9, 'Test accuracy for the time-to-target.')
  flags.DEFINE_string('fast_config', os.path.join(ROOT, 'configs', 'fast.py'),
                      "JAX's recipe for the time-to-target.")
  flags.DEFINE_integer('num_seeds', 3, 'Seeds trained in one program.')
  flags.DEFINE_integer('seed_epochs', 2, 'Epochs per seed in that test.')
  cli.run(main)
