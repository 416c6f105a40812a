"""Where the per-device steps run: all devices, by `pmap` or `jit(shard_map)`.

Both map one per-device function over the devices of every process along one
named axis, AXIS, so the collectives inside it (the gradient `pmean`,
BatchNorm's statistics, the evaluation sums) span the global batch either
way. Arguments and results are of these kinds:

- REPLICATED: the same on every device (the dataset, a step number).
- SHARDED: one row per device, the leading axis of a host array laid out as
  [global devices, ...]; each process feeds only the rows of its own devices.
- RUNS: a leading axis of runs (the state of a group of runs, their keys):
  on every device whole under data parallelism, split over the devices by
  RunsMap.
- SHARDED_RUNS: [global devices, runs, ...], a row per device of every run.

`create` picks the implementation: RunsMap, where each device trains whole
runs of a group, or the one `config.parallelism` names (PARALLELISMS), where
each run's batch is split over all devices.
"""

import abc
import socket
import threading
from typing import Any, Callable, Sequence

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from cnn_jax import errors

AXIS = 'batch'
# RunsMap's mesh axis over which a group's runs are split.
RUNS_AXIS = 'runs'
REPLICATED = 'replicated'
SHARDED = 'sharded'
RUNS = 'runs'
SHARDED_RUNS = 'sharded runs'

Kinds = str | Sequence[str]


class Parallelism(abc.ABC):
  """Places data on the devices and maps per-device functions over them."""

  def __init__(self):
    # Process-major, as `lax.axis_index(AXIS)` numbers the devices.
    self.devices = jax.devices()
    self.num_devices = len(self.devices)
    mine = [i for i, d in enumerate(self.devices)
            if d.process_index == jax.process_index()]
    if mine != list(range(mine[0], mine[-1] + 1)):
      raise RuntimeError(f'this process\'s devices are not contiguous in '
                         f'jax.devices(): {mine}')
    # The rows of a SHARDED host array that this process feeds.
    self.local_rows = slice(mine[0], mine[-1] + 1)
    # XLA's CPU devices in one process share one small thread pool, and a
    # collective waits on a pool thread: if steps are dispatched ahead, one
    # device's later all-reduces can hold every thread while the other
    # device still needs one for its earlier step, and both wait forever.
    # Such loops wait for each step.
    self.wait_each_step = (jax.default_backend() == 'cpu'
                           and jax.local_device_count() > 1)
    # The size of AXIS: the devices that share each run's batch.
    self.batch_devices = self.num_devices

  @abc.abstractmethod
  def replicate(self, tree: Any) -> Any:
    """Host arrays -> the same arrays on every device."""

  @abc.abstractmethod
  def shard(self, tree: Any) -> Any:
    """Host arrays [global devices, ...] -> row d on device d."""

  def runs(self, tree: Any) -> Any:
    """Host arrays [runs, ...] -> placed as RUNS; whole on every device
    unless the runs are split over the devices."""
    return self.replicate(tree)

  @abc.abstractmethod
  def get(self, tree: Any) -> Any:
    """REPLICATED or RUNS device arrays -> one host copy."""

  @abc.abstractmethod
  def abstract(self, tree: Any, kind: str) -> Any:
    """Host shapes (`jax.ShapeDtypeStruct`s) -> the shapes and placement
    that `replicate` (REPLICATED) or `shard` (SHARDED) would give them: a
    program lowered with these compiles exactly as it will be called."""

  @abc.abstractmethod
  def map(self, fn: Callable, in_kinds: Sequence[str], out_kinds: Kinds, *,
          donate_argnums: tuple[int, ...] = ()) -> Callable:
    """Compiles `fn`, written for one device, to run on all of them."""


class Pmap(Parallelism):
  """`jax.pmap`: every array carries a leading axis of local devices.

  Arrays are placed as the pmapped functions return them, split along a
  mesh axis named AXIS: pmap compiles again for an argument placed any
  other way (flax's `jax_utils.replicate` names its axis otherwise, so a
  run would compile its epoch twice: for the first epoch's state and for
  the states the program returns).
  """

  def _sharding(self) -> jax.sharding.Sharding:
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()), (AXIS,))
    return jax.NamedSharding(mesh, jax.P(AXIS))

  def _put(self, local: Any) -> Any:
    return jax.device_put(local, self._sharding())

  def replicate(self, tree):
    n = jax.local_device_count()
    return self._put(jax.tree.map(
        lambda x: np.broadcast_to(np.asarray(x), (n, *np.shape(x))), tree))

  def shard(self, tree):
    return self._put(
        jax.tree.map(lambda x: np.asarray(x)[self.local_rows], tree))

  def get(self, tree):
    # One transfer for the whole tree, then the first replica on the host.
    return jax.tree.map(lambda x: x[0], jax.device_get(tree))

  def abstract(self, tree, kind):
    n, sharding = jax.local_device_count(), self._sharding()
    rows = lambda shape: ((n, *shape) if kind in (REPLICATED, RUNS)
                          else (n, *shape[1:]))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(
        rows(x.shape), x.dtype, sharding=sharding), tree)

  def map(self, fn, in_kinds, out_kinds, *, donate_argnums=()):
    del in_kinds, out_kinds  # Every argument and result has a device axis.
    return jax.pmap(fn, axis_name=AXIS, donate_argnums=donate_argnums)


class ShardMap(Parallelism):
  """`jax.jit` of `jax.shard_map` over a one-axis mesh of all devices.

  Replicated arrays are plain global arrays; sharded ones are split over the
  mesh along their leading axis, of which each device sees its own row.
  """

  def __init__(self):
    super().__init__()
    self.mesh = jax.sharding.Mesh(np.array(self.devices), (AXIS,))

  def _put(self, tree: Any, spec: jax.P) -> Any:
    sharding = jax.NamedSharding(self.mesh, spec)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, x), tree)

  def replicate(self, tree):
    return self._put(jax.tree.map(np.asarray, tree), jax.P())

  def shard(self, tree):
    local = jax.tree.map(lambda x: np.asarray(x)[self.local_rows], tree)
    return self._put(local, jax.P(AXIS))

  def get(self, tree):
    return jax.device_get(jax.tree.map(lambda x: x.addressable_data(0), tree))

  def _spec(self, kind: str) -> jax.P:
    """Where arrays of `kind` lie on the mesh."""
    return jax.P(AXIS) if kind in (SHARDED, SHARDED_RUNS) else jax.P()

  def abstract(self, tree, kind):
    # Global arrays have the host arrays' shapes.
    sharding = jax.NamedSharding(self.mesh, self._spec(kind))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(
        x.shape, x.dtype, sharding=sharding), tree)

  def map(self, fn, in_kinds, out_kinds, *, donate_argnums=()):
    spec = self._spec
    multiple = not isinstance(out_kinds, str)
    outs = tuple(out_kinds) if multiple else (out_kinds,)
    rows = (SHARDED, SHARDED_RUNS)

    def per_device(*args):
      # A device's block of a SHARDED array is its row, with the axis kept.
      args = [_map_if(k in rows, lambda x: x[0], a)
              for a, k in zip(args, in_kinds)]
      results = fn(*args)
      results = results if multiple else (results,)
      results = tuple(_map_if(k in rows, lambda x: x[None], r)
                      for r, k in zip(results, outs))
      return results if multiple else results[0]

    out_specs = tuple(spec(k) for k in outs)
    # fn is written as for pmap: it averages its gradients itself with an
    # explicit pmean. With check_vma, shard_map would also sum them in the
    # transpose of the implicit broadcast of the replicated parameters.
    mapped = jax.shard_map(
        per_device, mesh=self.mesh,
        in_specs=tuple(spec(k) for k in in_kinds),
        out_specs=out_specs if multiple else out_specs[0], check_vma=False)
    return jax.jit(mapped, donate_argnums=donate_argnums)


class RunsMap(ShardMap):
  """Each device trains whole runs of a group: `jax.jit` of `jax.shard_map`
  over a one-axis mesh of all devices named RUNS_AXIS.

  RUNS arrays are split over the devices, so each device holds its runs'
  states and takes every step on their full batches; everything else is
  whole on every device, and SHARDED arrays have one row. On each device
  the function is vmapped over that row as AXIS, of size one, so that the
  steps' collectives over AXIS (the gradient `pmean`, BatchNorm's
  statistics) stay on their device: nothing passes between devices while
  the runs train (a shard_map axis of size one would still be an
  all-reduce in the compiled program).
  """

  def __init__(self):
    super().__init__()
    self.mesh = jax.sharding.Mesh(np.array(self.devices), (RUNS_AXIS,))
    self.batch_devices = 1

  def _spec(self, kind):
    return {REPLICATED: jax.P(), SHARDED: jax.P(), RUNS: jax.P(RUNS_AXIS),
            SHARDED_RUNS: jax.P(None, RUNS_AXIS)}[kind]

  def map(self, fn, in_kinds, out_kinds, *, donate_argnums=()):
    multiple = not isinstance(out_kinds, str)
    outs = tuple(out_kinds) if multiple else (out_kinds,)
    rows = (SHARDED, SHARDED_RUNS)

    def per_row(*args):
      results = fn(*args)
      return results if multiple else (results,)

    def per_device(*args):
      # SHARDED rows (one) are AXIS; the other results come back with it.
      results = jax.vmap(
          per_row, in_axes=tuple(0 if k in rows else None for k in in_kinds),
          axis_name=AXIS, axis_size=1)(*args)
      results = tuple(r if k in rows else jax.tree.map(lambda x: x[0], r)
                      for r, k in zip(results, outs))
      return results if multiple else results[0]

    out_specs = tuple(self._spec(k) for k in outs)
    mapped = jax.shard_map(
        per_device, mesh=self.mesh,
        in_specs=tuple(self._spec(k) for k in in_kinds),
        out_specs=out_specs if multiple else out_specs[0], check_vma=False)
    return jax.jit(mapped, donate_argnums=donate_argnums)

  def _place(self, tree: Any, kind: str) -> Any:
    # Every process holds the whole host arrays; each places its devices'
    # blocks.
    sharding = jax.NamedSharding(self.mesh, self._spec(kind))

    def put(x):
      x = np.asarray(x)
      return jax.make_array_from_callback(x.shape, sharding,
                                          lambda index: x[index])
    return jax.tree.map(put, tree)

  def replicate(self, tree):
    return self._place(tree, REPLICATED)

  def shard(self, tree):
    return self._place(tree, SHARDED)

  def runs(self, tree):
    return self._place(tree, RUNS)

  def get(self, tree):
    def fetch(x):
      if x.is_fully_replicated:
        return x.addressable_data(0)
      if x.is_fully_addressable:
        return x
      return multihost_utils.process_allgather(x, tiled=True)
    return jax.device_get(jax.tree.map(fetch, tree))


def _map_if(condition: bool, f: Callable, tree: Any) -> Any:
  return jax.tree.map(f, tree) if condition else tree


PARALLELISMS: dict[str, type[Parallelism]] = {'pmap': Pmap,
                                              'shard_map': ShardMap}


def create(name: str, num_runs: int = 1) -> Parallelism:
  """The Parallelism for a group of `num_runs` runs: the one place that
  decides between the two ways of using several devices.

  A group whose runs divide evenly among several devices trains runs
  parallel (RunsMap: each device its share of whole runs, no traffic
  between devices); any other group, a single run included, data parallel
  by the implementation `name` (config.parallelism) names, each run's batch
  split over all devices.
  """
  devices = jax.device_count()
  if devices > 1 and num_runs > 1 and num_runs % devices == 0:
    return RunsMap()
  return PARALLELISMS[name]()


class DistributedError(errors.UserError):
  """Multi-process flags that no run can have, or a coordinator port taken."""


def _check_layout(coordinator_address: str, num_processes: int,
                  process_id: int) -> None:
  """Raises DistributedError unless the three flags can name a run.

  Checked here because JAX's own checks are tracebacks, and a port it
  cannot bind crashes the process.
  """
  if num_processes < 1:
    raise DistributedError(f'--num_processes must be >= 1; got '
                           f'{num_processes}')
  if not 0 <= process_id < num_processes:
    raise DistributedError(f'--process_id must be in [0, {num_processes}); '
                           f'got {process_id}')
  host, _, port = coordinator_address.rpartition(':')
  host = host.removeprefix('[').removesuffix(']')  # [::1]:1234
  if not host or not port:
    raise DistributedError(f'--coordinator_address must be HOST:PORT, the '
                           f'address of process 0; got '
                           f'{coordinator_address}')
  if not (port.isdigit() and 1 <= int(port) <= 65535):
    raise DistributedError(f'--coordinator_address must name a port in '
                           f'[1, 65535]; got {port}')
  try:
    socket.getaddrinfo(host, int(port))
  except OSError as e:
    raise DistributedError(f'--coordinator_address: host {host} cannot be '
                           f'resolved ({e.strerror or e})') from None
  if process_id == 0:
    _check_port_free(int(port))


def _check_port_free(port: int) -> None:
  """Binds `port` as JAX's coordinator would: on every address, IPv6 with
  IPv4 where the host has both, other listeners' sockets not shared."""
  try:
    probe = socket.socket(socket.AF_INET6)
    address = ('::', port)
  except OSError:
    probe = socket.socket(socket.AF_INET)
    address = ('0.0.0.0', port)
  with probe:
    # Lets a port whose last connections are closing (TIME_WAIT) be reused,
    # as the coordinator's server does.
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
      probe.bind(address)
      probe.listen()
    except OSError as e:
      raise DistributedError(
          f'--coordinator_address: port {port} is in use on this machine '
          f'({e.strerror or e}), and process 0 must serve the run there; '
          f'give every process a free port') from None


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None, *,
                           timeout_s: int = 300,
                           on_timeout: Callable[[str], Any] | None = None
                           ) -> None:
  """Joins this process to JAX's distributed runtime.

  Must run before anything touches a device. Without arguments JAX reads
  the cluster from the environment (Cloud TPU, SLURM, ...). Collectives
  between processes on CPUs go through gloo.

  Args:
    coordinator_address: HOST:PORT of process 0, which serves the run there.
    num_processes: processes in the run.
    process_id: this process's index, 0 first.
    timeout_s: how long to wait for every process to join.
    on_timeout: called with a one-line explanation once `timeout_s` has
      passed without all processes, from another thread, while this one
      still waits inside JAX; it should end the process. JAX itself would
      abort it a little later with a native stack trace.

  Raises:
    DistributedError: the arguments name no possible run, or (on process 0)
      the coordinator's port is taken.
  """
  explicit = coordinator_address is not None
  if explicit:
    _check_layout(coordinator_address, num_processes, process_id)
    waiting = (f'the {num_processes} processes of the run at '
               f'{coordinator_address} (this is process {process_id})')
  else:
    waiting = 'the processes JAX finds in the environment'
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  logging.info('waiting up to %d s for %s', timeout_s, waiting)
  deadline = None
  if on_timeout is not None:
    deadline = threading.Timer(timeout_s, on_timeout, [
        f'not all of {waiting} joined within {timeout_s} s; start every '
        f'process with the same --coordinator_address and --num_processes '
        f'and its own --process_id, or allow more --initialization_timeout'])
    deadline.daemon = True
    deadline.start()
  try:
    # JAX's own deadline, later than ours: when it passes, it aborts.
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes,
                               process_id=process_id,
                               initialization_timeout=timeout_s + 30)
  except ValueError as e:
    if explicit:
      raise
    # No cluster in the environment: JAX's ValueError says what it lacks.
    raise DistributedError(f'--distributed: {e} JAX found no multi-process '
                           f'cluster in the environment; give '
                           f'--coordinator_address, --num_processes and '
                           f'--process_id instead') from None
  finally:
    if deadline is not None:
      deadline.cancel()


def is_main_process() -> bool:
  """Whether this process writes the files and logs that all processes share."""
  return jax.process_index() == 0


def sync(name: str) -> None:
  """Waits until every process has reached the barrier `name`."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def agree(flag: bool) -> bool:
  """The main process's `flag`, in every process: for decisions taken from
  a process's own clock that all processes must act on together."""
  if jax.process_count() == 1:
    return flag
  return bool(multihost_utils.broadcast_one_to_all(np.bool_(flag)))
