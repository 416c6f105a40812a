"""pmap and shard_map give the single-device step, in one process or several;
a group of runs trains whole runs on each device (RunsMap)."""

import json
import socket
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds

from cnn_jax import models
from cnn_jax import parallel
from cnn_jax import registry
from cnn_jax import train
import _util

R, S = parallel.REPLICATED, parallel.SHARDED


def _batch(n):
  rng = np.random.RandomState(0)
  return {'image': rng.rand(n, 28, 28, 1).astype(np.float32),
          'label': rng.randint(0, 10, n).astype(np.int32)}


def _by_device(batch, devices):
  return jax.tree.map(lambda x: x.reshape((devices, -1) + x.shape[1:]), batch)


def test_pmap_shard_map_and_one_device_take_the_same_steps():
  """Three SGD steps on one global batch of 8, three ways.

  Tolerance 1e-5: the ways differ only in how sums are split (per-device
  partial sums, then an all-reduce, or one sum on one device), which moves
  float32 results in the last bits. That holds for a smooth loss only, so
  the model has tanh and average pooling: with ReLU or max pooling a
  pre-activation or a window's runner-up within those bits of the switch
  turns an element's whole gradient on or off in one way and not another.
  The two devices' halves of the batch differ in contrast, so BatchNorm
  statistics not averaged over the devices fail from the first step. SGD,
  not Adam: BatchNorm makes the conv biases' gradient pure float noise,
  which Adam would scale up to +-lr.
  """
  assert jax.device_count() == 2, 'conftest forces two CPU devices'
  model = models.CNN(act=registry.lookup('activation', 'tanh'),
                     pool=registry.lookup('pooling', 'avg'))
  state = jax.device_get(train.create_train_state(
      jax.random.key(0), model, optax.sgd(0.1)))
  batch = _batch(8)
  contrast = np.linspace(0.25, 1.75, 8, dtype=np.float32)
  batch['image'] = batch['image'] * contrast[:, None, None, None]

  one = jax.pmap(train.train_step, axis_name=parallel.AXIS,
                 devices=jax.devices()[:1])
  s1 = jax.tree.map(lambda x: np.asarray(x)[None], state)
  for _ in range(3):
    s1, m1 = one(s1, _by_device(batch, 1))
  results = {'one device': jax.tree.map(lambda x: np.asarray(x)[0], (s1, m1))}

  for name, par in parallel.PARALLELISMS.items():
    par = par()
    step = par.map(train.train_step, (R, S), (R, R))
    s, b = par.replicate(state), par.shard(_by_device(batch, 2))
    for _ in range(3):
      s, m = step(s, b)
    results[name] = par.get((s, m))

  (ref_state, ref_metrics) = results.pop('one device')
  for name, (s, m) in results.items():
    for field in ('params', 'batch_stats'):
      chex.assert_trees_all_close(getattr(s, field), getattr(ref_state, field),
                                  atol=1e-5, rtol=1e-5, custom_message=name)
    np.testing.assert_allclose(m['loss'], ref_metrics['loss'], rtol=1e-5)
  # The steps moved the parameters: the comparison is not of initial values.
  moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), ref_state.params,
                       state.params)
  assert max(jax.tree.leaves(moved)) > 1e-3


def test_whole_runs_agree_under_pmap_and_shard_map(tmp_path):
  """A run's records do not depend on the parallelism, to float tolerance.

  Adam, so the tolerance is the whole-run one of train_test (1e-3).
  """
  config = _util.tiny_config()
  config.num_epochs = 2
  summaries, records = {}, {}
  for name in parallel.PARALLELISMS:
    config.parallelism = name
    with tfds.testing.mock_data(num_examples=48):
      summaries[name] = train.train_and_evaluate(config, str(tmp_path / name))
    with open(tmp_path / name / 'metrics.jsonl') as f:
      records[name] = [json.loads(line) for line in f]
  a, b = summaries['pmap'], summaries['shard_map']
  np.testing.assert_allclose(a['test_loss'], b['test_loss'], rtol=1e-3)
  assert a['epochs_completed'] == b['epochs_completed'] == 2
  for ra, rb in zip(records['pmap'], records['shard_map']):
    for key in ('train_loss', 'val_loss'):
      np.testing.assert_allclose(ra[key], rb[key], rtol=1e-3)


@pytest.mark.parametrize('name', sorted(parallel.PARALLELISMS))
def test_replicated_arguments_and_results_share_one_program(name):
  """A mapped function called on `replicate`d arrays, then on its own
  results (as the training loop passes the state on), lowers once: any
  other placement of the arguments would compile it again."""
  par = parallel.create(name)
  double = par.map(lambda tree: jax.tree.map(lambda x: 2 * x, tree), (R,), R,
                   donate_argnums=(0,))
  with _util.lowered_programs() as lowered:
    tree = par.replicate({'w': np.ones((3, 2), np.float32), 'step': 1})
    for _ in range(3):
      tree = double(tree)
  assert len(lowered) == 1, lowered
  np.testing.assert_array_equal(par.get(tree)['w'], 8 * np.ones((3, 2)))
  assert par.get(tree)['step'] == 8


def test_shard_map_puts_rows_on_their_devices():
  par = parallel.ShardMap()
  x = par.shard(np.arange(6).reshape(2, 3))
  assert [np.asarray(s.data).tolist() for s in x.addressable_shards] == [
      [[0, 1, 2]], [[3, 4, 5]]]
  # Each device sees its own row, without the device axis.
  row_sums = par.map(lambda r: r.sum(keepdims=True), (S,), S)(x)
  assert np.asarray(row_sums).ravel().tolist() == [3, 12]


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _main_processes(args, workdir, num_processes, devices_each):
  """Starts `python -m cnn_jax.main` as one run over `num_processes`."""
  env = _util.subprocess_env(devices_each)
  cmd = [sys.executable, '-m', 'cnn_jax.main',
         f'--config={_util.ROOT}/configs/default.py', f'--workdir={workdir}',
         *args]
  if num_processes > 1:
    cmd += [f'--coordinator_address=127.0.0.1:{_free_port()}',
            f'--num_processes={num_processes}']
    cmds = [cmd + [f'--process_id={i}'] for i in range(num_processes)]
  else:
    cmds = [cmd]
  return [subprocess.Popen(c, cwd=_util.ROOT, env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
          for c in cmds]


def _wait_all(procs, timeout):
  """Each process's (exit status, output); kills them all if one hangs."""
  try:
    outs = [p.communicate(timeout=timeout) for p in procs]
    return [(p.returncode, out) for p, (out, _) in zip(procs, outs)]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()


def test_two_processes_equal_one_process_with_two_devices(tmp_path,
                                                          real_data_dir):
  """JAX's distributed runtime on 127.0.0.1, CPU collectives through gloo.

  Same global batch over the same number of devices: under pmap, two
  processes give the one-process numbers exactly (rtol 1e-6); under
  shard_map, to the float tolerance that separates the two parallelisms
  (1e-3, see test_whole_runs_agree_under_pmap_and_shard_map). Only process
  0 writes the run's files and logs progress.
  """
  args = ['--config.num_epochs=1', '--config.batch_size=32',
          '--config.data.num_train_examples=320',
          '--config.data.num_validation_examples=500',
          f'--config.data.data_dir={real_data_dir}',
          f'--config.data.manual_dir={_util.MANUAL_DIR}']
  summaries = {}
  # One process first: it prepares the dataset the others then share.
  for name, processes, devices, parallelism in (
      ('one', 1, 2, 'pmap'), ('two', 2, 1, 'pmap'),
      ('two_shard_map', 2, 1, 'shard_map')):
    results = _wait_all(_main_processes(
        args + [f'--config.parallelism={parallelism}'], tmp_path / name,
        processes, devices), timeout=300)
    for code, out in results:
      assert code == 0, out[-3000:]
    with open(tmp_path / name / 'summary.json') as f:
      summaries[name] = json.load(f)
    if processes > 1:
      assert 'epoch 1/1' in results[0][1]
      assert 'epoch 1/1' not in results[1][1]
      with open(tmp_path / name / 'metrics.jsonl') as f:
        assert len(f.readlines()) == 1
  one, two, two_shard_map = (summaries[k]
                              for k in ('one', 'two', 'two_shard_map'))
  assert one['num_processes'] == 1
  for other in (two, two_shard_map):
    assert (other['num_processes'], other['num_devices']) == (2, 2)
  for key in ('test_loss', 'test_accuracy', 'best_val_accuracy'):
    np.testing.assert_allclose(two[key], one[key], rtol=1e-6, err_msg=key)
  np.testing.assert_allclose(two_shard_map['test_loss'], one['test_loss'],
                             rtol=1e-3)
  # Accuracies move in whole images: 2 of the 500 validation images, 10 of
  # the 10,000 test images.
  assert abs(two_shard_map['best_val_accuracy']
             - one['best_val_accuracy']) <= 2 / 500 + 1e-6
  assert abs(two_shard_map['test_accuracy'] - one['test_accuracy']) <= 1e-3


# Layouts no run can have, each refused by name before JAX is called.
BAD_LAYOUTS = [
    (('127.0.0.1:1234', 2, 5), '--process_id must be in [0, 2); got 5'),
    (('127.0.0.1:1234', 2, -1), '--process_id must be in [0, 2); got -1'),
    (('127.0.0.1:1234', 0, 0), '--num_processes must be >= 1; got 0'),
    (('127.0.0.1', 2, 1), 'must be HOST:PORT'),
    (('127.0.0.1:', 2, 1), 'must be HOST:PORT'),
    ((':1234', 2, 1), 'must be HOST:PORT'),
    (('127.0.0.1:99999', 2, 1), 'a port in [1, 65535]; got 99999'),
    (('127.0.0.1:0', 2, 1), 'a port in [1, 65535]; got 0'),
    (('127.0.0.1:http', 2, 1), 'a port in [1, 65535]; got http'),
    (('no-such-host.invalid:1234', 2, 1), 'no-such-host.invalid cannot be '
                                          'resolved'),
]


@pytest.mark.parametrize('layout,words', BAD_LAYOUTS)
def test_an_impossible_layout_is_refused_by_name(layout, words):
  with pytest.raises(parallel.DistributedError) as e:
    parallel.initialize_distributed(*layout, timeout_s=1)
  assert words in str(e.value)
  assert '\n' not in str(e.value)


def _process(args, workdir):
  """Starts one process of a multi-process `python -m cnn_jax.main`."""
  cmd = [sys.executable, '-m', 'cnn_jax.main',
         f'--config={_util.ROOT}/configs/default.py', f'--workdir={workdir}',
         *args]
  return subprocess.Popen(cmd, cwd=_util.ROOT, env=_util.subprocess_env(1),
                          text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)


def _one_error_line(code, err):
  assert code == 2, err[-3000:]
  errors = [l for l in err.splitlines() if l.startswith('error: ')]
  assert len(errors) == 1, err[-3000:]
  assert 'Traceback' not in err and 'Check failure' not in err, err[-3000:]
  return errors[0]


def test_a_taken_coordinator_port_is_one_line(tmp_path):
  """JAX's own bind of a taken port crashed the process (SIGSEGV)."""
  with socket.socket() as holder:
    holder.bind(('127.0.0.1', 0))
    holder.listen()
    port = holder.getsockname()[1]
    proc = _process([f'--coordinator_address=127.0.0.1:{port}',
                     '--num_processes=2', '--process_id=0'], tmp_path / 'run')
    _, err = proc.communicate(timeout=120)
  line = _one_error_line(proc.returncode, err)
  assert f'port {port} is in use' in line, line
  assert not (tmp_path / 'run').exists()


def test_a_missing_process_ends_the_wait_in_one_line(tmp_path):
  """Process 0 without process 1, and process 1 without process 0, each
  at its own port: each says what it waits for, and stops when
  --initialization_timeout passes (JAX's own wait is 300 s, then an abort
  with a native stack trace)."""
  start = time.time()
  procs = [_process([f'--coordinator_address=127.0.0.1:{_free_port()}',
                     '--num_processes=2', f'--process_id={i}',
                     '--initialization_timeout=3'], tmp_path / f'run{i}')
           for i in (0, 1)]
  try:
    errs = [p.communicate(timeout=120)[1] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  assert time.time() - start < 100
  for i, (proc, err) in enumerate(zip(procs, errs)):
    assert 'waiting up to 3 s for the 2 processes of the run at' in err, err
    line = _one_error_line(proc.returncode, err)
    assert 'within 3 s' in line and f'(this is process {i})' in line, line
    assert not (tmp_path / f'run{i}').exists()


def test_a_group_of_runs_trains_whole_runs_on_each_device():
  """Four runs on two devices: each device holds two whole runs and takes
  their steps on their full batches, with no collective between devices
  in the compiled step, and each run's step is its step on one device.
  A single run, or runs that do not divide evenly among the devices, stay
  data parallel.

  SGD and tolerance 1e-5, as in
  test_pmap_shard_map_and_one_device_take_the_same_steps (which says why).
  """
  assert jax.device_count() == 2, 'conftest forces two CPU devices'
  assert type(parallel.create('pmap', 1)) is parallel.Pmap
  assert type(parallel.create('shard_map', 3)) is parallel.ShardMap
  par = parallel.create('pmap', 4)
  assert type(par) is parallel.RunsMap and par.batch_devices == 1

  model = models.CNN(act=registry.lookup('activation', 'tanh'),
                     pool=registry.lookup('pooling', 'avg'))
  tx = optax.sgd(0.1)  # One optimizer: the runs' states stack.
  states = [jax.device_get(train.create_train_state(jax.random.key(k), model,
                                                    tx)) for k in range(4)]
  batches = [_batch(8) for _ in range(4)]
  for k, b in enumerate(batches):
    b['image'] = b['image'] * (0.5 + k / 4)
  step = par.map(jax.vmap(train.train_step), (parallel.RUNS,
                                               parallel.SHARDED_RUNS),
                 (parallel.RUNS, parallel.RUNS))
  s = par.runs(train.stack(states))
  # [devices along AXIS = 1, runs, batch, ...]
  b = par.shard(jax.tree.map(lambda *xs: np.stack(xs)[None], *batches))
  assert {x.data.shape[0] for x in jax.tree.leaves(s)[0].addressable_shards
          } == {2}
  compiled = step.lower(s, b).compile().as_text()
  for collective in ('all-reduce', 'all-gather', 'collective-permute',
                     'all-to-all'):
    assert collective not in compiled, collective
  for _ in range(3):
    s, m = step(s, b)
  together = par.get((s, m))

  one = jax.pmap(train.train_step, axis_name=parallel.AXIS,
                 devices=jax.devices()[:1])
  for k in range(4):
    s1 = jax.tree.map(lambda x: np.asarray(x)[None], states[k])
    for _ in range(3):
      s1, m1 = one(s1, _by_device(batches[k], 1))
    s1, m1 = jax.tree.map(lambda x: np.asarray(x)[0], (s1, m1))
    for field in ('params', 'batch_stats'):
      chex.assert_trees_all_close(
          train.unstack(getattr(together[0], field), k), getattr(s1, field),
          atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(together[1]['loss'][k], m1['loss'], rtol=1e-5)
  # The steps moved the parameters: the comparison is not of initial values.
  moved = jax.tree.map(lambda a, b: np.abs(a - b).max(),
                       train.unstack(together[0].params, 0), states[0].params)
  assert max(jax.tree.leaves(moved)) > 1e-3
