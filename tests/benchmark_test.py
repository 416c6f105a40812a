"""The benchmark's parts, small; the full command is run for the README."""

import os
import subprocess
import sys
import time

import pytest

from configs import default
from configs import seed_recipe
from cnn_jax import benchmark
import _util


def test_the_jax_side_trains_the_seed_recipe_config():
  config = benchmark._seed_recipe('', batch_size=128)
  expected = seed_recipe.get_config()
  expected.batch_size = 128
  assert config.to_dict() == expected.to_dict()
  assert benchmark.device_name() == 'cpu'
  assert benchmark.torch_device() == 'cpu'


def test_jax_step_timer_times_the_trainer_step():
  config = benchmark._seed_recipe('', batch_size=8)
  timer = benchmark.jax_step_timer(config, steps=3)
  rate = timer()
  # 3 steps of 8 images: a rate, not a count of steps or seconds.
  assert 10 < rate < 1e6, rate


def test_failed_subprocess_names_its_reason():
  with pytest.raises(benchmark.SubprocessError, match='No module named'):
    benchmark._run([sys.executable, '-m', 'cnn_jax.no_such_module'])


def test_a_hung_subprocess_is_stopped_and_named():
  """torch.compile hanging on a GPU must not take the benchmark with it."""
  t0 = time.perf_counter()
  with pytest.raises(benchmark.SubprocessError, match='took over 1 s'):
    benchmark._run([sys.executable, '-c', 'import time; time.sleep(60)'],
                   timeout=1)
  assert time.perf_counter() - t0 < 30


def _result(**overrides):
  result = {
      'jax_train_images_per_sec': 4700.0, 'torch_train_images_per_sec': 4100.0,
      'torch_step_only_images_per_sec': 5000.0, 'throughput_ratio': 4.7 / 4.1,
      'jax_time_to_90_s': 40.0, 'torch_time_to_90_s': 41.0,
      'time_to_90_ratio': 40 / 41, 'jax_epochs_to_90': 2,
      'torch_epochs_to_90': 3, 'vmap_seeds_seconds': 150.0,
      'sequential_seeds_seconds': 100.0, 'vmap_seeds_speedup': 100 / 150,
      'vmap_seeds_max_abs_diff': {'test_accuracy': 0.001}, 'num_seeds': 3,
      'seed_epochs': 2, 'batch_size': 128, 'target_accuracy': 0.9,
      'jax_device': 'cpu', 'torch_version': '2.13.0', 'threads': 2,
      'cpu_count': 2, 'torch_device': 'cpu',
      'targets': {k: f'{op} {bar}x'
                  for k, (op, bar) in benchmark.TARGETS['cpu'].items()}}
  result.update(overrides)
  return result


def test_table_shows_ratios_and_targets():
  table = benchmark.table(_result())
  assert '| Training throughput (img/s, batch 128) | 4,700 | 4,100 | 1.15x' in table
  assert '| 40.0 | 41.0 | 0.98x | <= 0.4x |' in table
  assert '0.67x | >= 1.3x |' in table
  assert '| PyTorch torch.compile, same loop (img/s) |  | n/a | n/a |' in table
  assert 'PyTorch 2.13.0 on the CPU with 2 threads' in table


def test_gpu_table_names_the_gpu_targets_and_the_compiled_row():
  table = benchmark.table(_result(
      torch_device='cuda', torch_compiled_images_per_sec=2000.0,
      compiled_throughput_ratio=2.35,
      targets={k: f'{op} {bar}x'
               for k, (op, bar) in benchmark.TARGETS['gpu'].items()}))
  assert '| 4,700 | 4,100 | 1.15x | >= 5.0x |' in table
  assert '| PyTorch torch.compile, same loop (img/s) |  | 2,000 | 2.35x |' in table
  assert 'on the same GPU, data on the GPU' in table


def test_table_without_pytorch_says_so():
  table = benchmark.table(_result(
      torch_train_images_per_sec=None, torch_step_only_images_per_sec=None,
      throughput_ratio=None, torch_time_to_90_s=None, time_to_90_ratio=None,
      torch_epochs_to_90=None, torch_version=None))
  assert '| 4,700 | n/a | n/ax |' not in table
  assert '| 4,700 | n/a | n/a |' in table
  assert 'PyTorch not installed' in table and 'None' not in table


def test_bad_flag_is_one_line_and_leaves_nothing(tmp_path):
  workdir = tmp_path / 'bench'
  proc = subprocess.run(
      [sys.executable, '-m', 'cnn_jax.benchmark', f'--workdir={workdir}',
       f'--manual_dir={_util.MANUAL_DIR}', '--target=1.5'], cwd=_util.ROOT,
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  errors = [l for l in proc.stderr.splitlines() if l.startswith('error: ')]
  assert errors == ['error: --target must be in (0, 1); got 1.5']
  assert 'Traceback' not in proc.stderr
  assert not os.path.exists(workdir)


def test_default_config_is_found_from_any_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert benchmark._default_config().to_dict() == default.get_config().to_dict()
