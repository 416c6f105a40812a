"""Result files: written atomically, stamped with the code that made them,
and in folders that one process at a time may write.

Every JSON result (summary.json, metrics.jsonl, sweep.json, benchmark.json)
goes through `write_json` or `write_json_lines`, so a reader or a killed
process never leaves half a file behind.
"""

import fcntl
import importlib.metadata
import json
import math
import os
import socket
import subprocess
import tempfile
from typing import IO, Any

import flax
import jax
import optax
import orbax.checkpoint as ocp

from cnn_jax import errors


LOCK_FILE = '.lock'
# The files of a run folder (run.py writes them) and of a sweep folder
# (sweep.py); report, claims, evaluate and benchmark read them by these
# names.
CONFIG_FILE = 'config.json'
METRICS_FILE = 'metrics.jsonl'
SUMMARY_FILE = 'summary.json'
SWEEP_FILE = 'sweep.json'
FAILED_FILE = 'error.txt'
# Folders this process has claimed, with their open lock files.
_claimed: dict[str, IO[str]] = {}


class FolderError(errors.UserError):
  """A run or sweep folder that cannot be written: a file, a read-only place."""


class FolderInUse(FolderError):
  """Another process holds the folder a run or sweep would write."""


def unwritable(folder: str) -> str | None:
  """Why `folder` could not be made or written in; None if it could.

  Judged at the nearest folder at or above it that exists, so that a folder
  not made yet (a fresh clone's relative data_dir) counts as writable.
  """
  existing = os.path.abspath(os.path.expanduser(folder))
  while not os.path.exists(existing):  # Ends: '/' exists.
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    return f'cannot be made: {existing} is a file'
  try:  # Tried, not inferred from the mode bits: root ignores those.
    with tempfile.TemporaryFile(dir=existing):
      return None
  except OSError as e:
    return f'cannot be written: {e.strerror} in {existing}'


def check_folder(folder: str, what: str = 'workdir') -> str:
  """Raises FolderError unless `folder` can be claimed; creates nothing.

  Called before the data are loaded, so that a mistyped or read-only workdir
  or a folder another process holds is refused at once.

  Returns:
    The folder as an absolute path, `~` expanded.
  """
  folder = os.path.abspath(os.path.expanduser(folder))
  if os.path.exists(folder) and not os.path.isdir(folder):
    raise FolderError(f'{what} {folder} is a file, not a folder')
  problem = unwritable(folder)
  if problem:
    raise FolderError(f'{what} {folder} {problem}')
  lock = os.path.join(folder, LOCK_FILE)
  if os.path.exists(lock) and os.path.realpath(folder) not in _claimed:
    with open(lock) as f:
      try:
        fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
      except BlockingIOError:
        raise FolderInUse(_in_use(folder, f.read())) from None
  return folder


def _in_use(folder: str, holder: str) -> str:
  return (f'{folder} is in use by {holder.strip() or "another process"}; '
          f'wait for it to end or stop it')


def claim_folder(folder: str) -> None:
  """Claims `folder` for this process until it exits, or raises FolderInUse.

  Two processes writing one run or sweep folder would overwrite each
  other's checkpoints and summaries. The claim is an flock on
  `folder/.lock`, which the OS releases when the process ends, a `kill -9`
  included. Claiming a folder this process already holds is a no-op.
  """
  folder = os.path.realpath(check_folder(folder))
  if folder in _claimed:
    return
  try:
    os.makedirs(folder, exist_ok=True)
    # Held open until the process exits: closing it would drop the lock.
    f = open(os.path.join(folder, LOCK_FILE), 'a+')  # pylint: disable=R1732
  except OSError as e:  # A full disk, a quota: found before any training.
    raise FolderError(f'cannot claim {folder}: {e.strerror or e}') from None
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    f.seek(0)
    holder = f.read()
    f.close()
    raise FolderInUse(_in_use(folder, holder)) from None
  try:
    f.seek(0)
    f.truncate()
    f.write(f'process {os.getpid()} on {socket.gethostname()}\n')
    f.flush()
  except OSError as e:
    try:
      f.close()  # Flushes the unwritten line again, and fails again.
    except OSError:
      pass
    raise FolderError(f'cannot claim {folder}: {e.strerror or e}') from None
  _claimed[folder] = f


def _write_atomically(path: str, text: str) -> None:
  tmp = path + '.tmp'
  try:
    with open(tmp, 'w') as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:  # A full disk or Ctrl-C: no half-written file left.
    if os.path.lexists(tmp):
      os.remove(tmp)
    raise


def write_json(path: str, obj: Any) -> None:
  """Writes `obj` as indented JSON, all or nothing."""
  _write_atomically(path, json.dumps(obj, indent=2, sort_keys=True) + '\n')


def write_json_lines(path: str, records: list[dict[str, Any]]) -> None:
  """Writes one JSON object per line, all or nothing."""
  _write_atomically(path, ''.join(json.dumps(r, sort_keys=True) + '\n'
                                  for r in records))


def read_json_lines(path: str) -> list[dict[str, Any]]:
  """The records of a JSON-lines file; [] when it does not exist."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class SummaryError(errors.UserError):
  """A summary.json whose status or metric no run writes."""


def metric_value(summary: Any, metric: str) -> float | None:
  """A run's `metric` from its summary.json, or None: the run diverged.

  The one rule of what counts as a result, for the report and the claims
  alike. A run diverged if its status says so, or if the metric is not
  finite (NaN, inf): a number no mean can take in. A summary without a
  status (written before there was one) is 'ok'.

  Raises:
    SummaryError: the summary is not a JSON object, its status is neither
      'ok' nor 'diverged', or the metric of a run that did not diverge is
      missing or not a number; the message names the field.
  """
  if not isinstance(summary, dict):
    raise SummaryError('not a JSON object')
  status = summary.get('status', 'ok')
  if status not in ('ok', 'diverged'):
    raise SummaryError(f'status is {status}; a run writes ok or diverged')
  if status == 'diverged':
    return None
  if metric not in summary:
    raise SummaryError(f'lacks {metric}')
  value = summary[metric]
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise SummaryError(f'{metric} is {value!r}, not a number')
  return float(value) if math.isfinite(value) else None


def versions() -> dict[str, str | None]:
  """The versions of the libraries whose numbers a result depends on.

  TFDS's is read from its metadata, without importing TensorFlow; None where
  it is not installed (runs from the decoded-split cache).
  """
  try:
    tfds_version = importlib.metadata.version('tensorflow-datasets')
  except importlib.metadata.PackageNotFoundError:
    tfds_version = None
  return {'jax': jax.__version__, 'jaxlib': jax.lib.__version__,
          'flax': flax.__version__, 'optax': optax.__version__,
          'tfds': tfds_version, 'orbax': ocp.__version__}


def git_commit() -> str | None:
  """This checkout's commit, '-dirty' if it has uncommitted changes.

  So that a result names the code that made it; None outside a checkout.
  A copy of the tree without its .git (a remote machine) names its commit
  in CNN_JAX_GIT_COMMIT.
  """
  if os.environ.get('CNN_JAX_GIT_COMMIT'):
    return os.environ['CNN_JAX_GIT_COMMIT']
  try:
    out = subprocess.run(['git', 'describe', '--always', '--dirty',
                          '--abbrev=40'], capture_output=True,
                         text=True, timeout=10,
                         cwd=os.path.dirname(os.path.abspath(__file__)))
  except (OSError, subprocess.SubprocessError):
    return None
  return out.stdout.strip() if out.returncode == 0 else None
