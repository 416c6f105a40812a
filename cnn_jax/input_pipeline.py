"""Fashion-MNIST from TFDS, held on the device, shuffled and batched there.

The whole dataset is 70,000 x 784 bytes, so it is read once into arrays and
moved to the accelerator; each epoch then only draws a permutation of
indices on the device, leaving the host nothing to do per step.

TFDS prepares the dataset (checksums verified) and, the first time, its
decoded splits are kept as arrays next to TFDS's own files
(`<data_dir>/<dataset>/<version>/cnn_jax_<split>.npz`, `config.data.cache`),
with a manifest (MANIFEST) written last that ties them to what made them:
the dataset, its TFDS version, the split sizes and each split's SHA-256.
Later runs read those without importing TensorFlow, which starts them
faster and lets machines without TensorFlow train. A cache is read
only from the version folder TFDS prepared for the version it reads, and
only after every check passes; a damaged one is refused, never trained on.
"""

import dataclasses
import functools
import hashlib
import importlib.util
import json
import os
from typing import IO, Any, Callable

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnn_jax import errors
from cnn_jax import parallel
from cnn_jax import records

class DataError(errors.UserError):
  """The data cannot be read or prepared: a file, a folder, a dataset name."""


@dataclasses.dataclass(frozen=True)
class Dataset:
  """What the config checks need to know of a dataset before reading it."""
  num_classes: int
  num_train: int
  num_test: int
  # The TFDS version whose prepared data are read: the installed TFDS must
  # build it, and the cache is read from its folder only.
  tfds_version: str
  # SHA-256 of each file TFDS's builder downloads, hence the ones
  # `config.data.manual_dir` needs: a bad copy is named before TFDS runs.
  manual_files: dict[str, str]
  # The name of each label, in label order (plots, predictions).
  class_names: tuple[str, ...]


# The model's input is 28x28 grey (IMAGE_SHAPE): datasets of that form only.
DATASETS = {
    'fashion_mnist': Dataset(
        num_classes=10, num_train=60_000, num_test=10_000,
        tfds_version='3.0.1', manual_files={
            'train-images-idx3-ubyte.gz':
                '3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84',
            'train-labels-idx1-ubyte.gz':
                'a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845',
            't10k-images-idx3-ubyte.gz':
                '346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073',
            't10k-labels-idx1-ubyte.gz':
                '67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5',
        }, class_names=(
            'T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal',
            'Shirt', 'Sneaker', 'Bag', 'Ankle boot')),
}
MANUAL_FILES = tuple(DATASETS['fashion_mnist'].manual_files)
IMAGE_SHAPE = (28, 28, 1)
# Read in chunks: `batch_size=-1` aborts under tfds.testing.mock_data.
_READ_BATCH = 10_000
# TFDS's full splits, which the cache holds; validation is cut from 'train'.
_SPLITS = ('train', 'test')
CACHE_FILE = 'cnn_jax_{split}.npz'
# Written after the splits: without it, the arrays are not a cache.
MANIFEST = 'cnn_jax_cache.json'
# What TFDS writes into each version folder it prepares.
TFDS_INFO = 'dataset_info.json'

Split = dict[str, np.ndarray]


class Splits(dict):
  """{'train', 'validation', 'test'} -> Split, and in `source` where the
  arrays came from (summary.json's "data")."""

  def __init__(self, splits: dict[str, Split], source: dict[str, Any]):
    super().__init__(splits)
    self.source = source


def missing_manual_files(manual_dir: str) -> list[str]:
  """The MANUAL_FILES absent from `manual_dir`."""
  return [f for f in MANUAL_FILES
          if not os.path.isfile(os.path.join(manual_dir, f))]


def check_manual_files(dataset: str, manual_dir: str) -> None:
  """Raises DataError naming the first file that is not the official one.

  TFDS would refuse it too, but in a message that names a URL; a truncated
  or corrupted copy is the usual cause, and the file is what to replace.
  """
  for name, expected in DATASETS[dataset].manual_files.items():
    path = os.path.join(manual_dir, name)
    with open(path, 'rb') as f:
      digest = hashlib.file_digest(f, 'sha256').hexdigest()
    if digest != expected:
      raise DataError(f'{path} is not the official {name} (its SHA-256 '
                      f'differs: truncated or corrupted?); replace it')


def _read(builder, split: str) -> Split:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  chunks = list(tfds.as_numpy(builder.as_dataset(split=split,
                                                 batch_size=_READ_BATCH)))
  return {
      'image': np.concatenate([c['image'] for c in chunks]).astype(np.uint8),
      'label': np.concatenate([c['label'] for c in chunks]).astype(np.int32),
  }


def _tfds_data_dir(data_dir: str) -> str:
  """The folder TFDS uses for `config.data.data_dir` ('' = TFDS's default)."""
  return os.path.expanduser(data_dir or os.environ.get('TFDS_DATA_DIR')
                            or '~/tensorflow_datasets')


def cache_folder(data_config: ml_collections.ConfigDict) -> str:
  """The version folder TFDS prepares for the version cnn_jax reads: the one
  place the decoded-split cache is read from and written to."""
  return os.path.join(_tfds_data_dir(data_config.data_dir),
                      data_config.dataset,
                      DATASETS[data_config.dataset].tfds_version)


def cache_files() -> tuple[str, ...]:
  """The files of a version folder that reading its cache needs, TFDS's
  dataset_info.json included: what a machine without TensorFlow needs."""
  return (*(CACHE_FILE.format(split=s) for s in _SPLITS), MANIFEST, TFDS_INFO)


def _split_sizes(dataset: str) -> dict[str, int]:
  return {'train': DATASETS[dataset].num_train,
          'test': DATASETS[dataset].num_test}


def _digest(split: Split) -> str:
  """SHA-256 of a split's image bytes followed by its label bytes."""
  digest = hashlib.sha256()
  for key in ('image', 'label'):
    digest.update(np.ascontiguousarray(split[key]))
  return digest.hexdigest()


def _read_json(path: str) -> Any:
  """The file's JSON value; None if it cannot be read as JSON."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _one_line(e: BaseException) -> str:
  lines = str(e).strip().splitlines()
  return f'{type(e).__name__}: {lines[0]}' if lines else type(e).__name__


def _rebuild(folder: str) -> str:
  return f'delete {folder}/cnn_jax_*.npz to rebuild the cache from TFDS'


def _not_a_cache(folder: str, dataset: str) -> str | None:
  """Why `folder` holds no cache that cnn_jax wrote from data TFDS prepared
  for the version it reads; None where it holds one.

  Raises:
    DataError: where one of cnn_jax's cache files is a folder or some other
      thing that is not a file, which no run could replace.
  """
  for name in (*(CACHE_FILE.format(split=s) for s in _SPLITS), MANIFEST):
    path = os.path.join(folder, name)
    if os.path.lexists(path) and not os.path.isfile(path):
      kind = 'a folder' if os.path.isdir(path) else 'not a regular file'
      raise DataError(f'{path} is {kind}, where the decoded-split cache '
                      f'keeps a file; remove it')
  missing = [n for n in cache_files()
             if not os.path.isfile(os.path.join(folder, n))]
  if missing:
    return f'no {", ".join(missing)}'
  version = DATASETS[dataset].tfds_version
  info = _read_json(os.path.join(folder, TFDS_INFO))
  if not (isinstance(info, dict) and info.get('name') == dataset
          and info.get('version') == version):
    return f'its {TFDS_INFO} is not TFDS\'s for {dataset} {version}'
  return None


def find_cache(data_config: ml_collections.ConfigDict) -> str | None:
  """The folder of the dataset's decoded-split cache; None if it has none.

  Only the version folder that TFDS prepares for DATASETS' version is
  considered, and only with TFDS's dataset_info.json and cnn_jax's manifest
  in it: arrays left elsewhere, or without what made them, are no cache.
  read_cache checks the contents.
  """
  folder = cache_folder(data_config)
  return None if _not_a_cache(folder, data_config.dataset) else folder


def _load_npz(path: str, folder: str) -> dict[str, Any]:
  try:
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
      raise ValueError('not an .npz archive')
    with loaded:
      return {k: loaded[k] for k in loaded.files}
  except Exception as e:  # pylint: disable=broad-except
    # Whatever a damaged file makes numpy or zipfile raise is the file's fault.
    raise DataError(f'{path}: cannot be read ({_one_line(e)}); '
                    f'{_rebuild(folder)}') from None


def _split_problem(arrays: dict[str, Any], dataset: str,
                   split: str) -> str | None:
  """What keeps `arrays` from being the dataset's split; None if nothing."""
  if sorted(arrays) != ['image', 'label']:
    return f'holds arrays {sorted(arrays)}; expected image and label'
  n = _split_sizes(dataset)[split]
  for key, dtype, shape in (('image', np.uint8, (n, *IMAGE_SHAPE)),
                            ('label', np.int32, (n,))):
    a = arrays[key]
    if not (isinstance(a, np.ndarray) and a.dtype == dtype
            and a.shape == shape):
      found = (f'{a.dtype} {a.shape}' if isinstance(a, np.ndarray)
               else type(a).__name__)
      return f'{key} is {found}; expected {np.dtype(dtype)} {shape}'
  num_classes = DATASETS[dataset].num_classes
  low, high = int(arrays['label'].min()), int(arrays['label'].max())
  if low < 0 or high >= num_classes:
    return f'labels span {low}..{high}; expected 0..{num_classes - 1}'
  return None


def read_cache(folder: str, dataset: str
               ) -> tuple[dict[str, Split], dict[str, Any]]:
  """The full splits of a cache find_cache found, checked, and their source.

  Each split must have the dataset's size, image shape, dtypes and label
  range, and the SHA-256 its manifest recorded when it was written.

  Returns:
    ({'train', 'test'} -> Split, the source facts for summary.json).

  Raises:
    DataError: naming the first file that fails, and what to delete.
  """
  version = DATASETS[dataset].tfds_version
  manifest_path = os.path.join(folder, MANIFEST)
  manifest = _read_json(manifest_path)
  try:
    digests = {s: manifest['splits'][s]['sha256'] for s in _SPLITS}
    valid = (manifest['dataset'] == dataset
             and manifest['tfds_version'] == version
             and all(isinstance(d, str) for d in digests.values()))
  except (TypeError, KeyError):
    valid = False
  if not valid:
    raise DataError(f'{manifest_path}: not a manifest of {dataset} {version} '
                    f'written by cnn_jax; {_rebuild(folder)}')
  full = {}
  for split in _SPLITS:
    path = os.path.join(folder, CACHE_FILE.format(split=split))
    arrays = _load_npz(path, folder)
    problem = _split_problem(arrays, dataset, split)
    if not problem and _digest(arrays) != digests[split]:
      problem = f'its SHA-256 differs from the one {MANIFEST} records'
    if problem:
      raise DataError(f'{path}: {problem}; {_rebuild(folder)}')
    full[split] = arrays
  return full, {'source': 'cache', 'folder': folder, 'dataset': dataset,
                'tfds_version': version, 'sha256': digests}


def _replace_whole(path: str, write: Callable[[IO[bytes]], Any]) -> None:
  """Writes `path` through a temporary file that no failure leaves behind."""
  tmp = os.path.join(os.path.dirname(path),
                     f'.{os.path.basename(path)}.{os.getpid()}.tmp')
  f = open(tmp, 'wb')  # pylint: disable=consider-using-with
  try:
    with f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    os.remove(tmp)
    raise


def write_cache(folder: str, splits: dict[str, Split],
                dataset: str) -> dict[str, Any]:
  """Writes the full splits into `folder`, then the manifest tying them to
  the dataset, its TFDS version and their SHA-256.

  The old manifest goes first: a write cut short leaves arrays without one,
  which find_cache does not take for a cache.

  Returns:
    The manifest.

  Raises:
    OSError: where a file cannot be written; no temporary file remains.
  """
  manifest_path = os.path.join(folder, MANIFEST)
  if os.path.lexists(manifest_path):
    os.remove(manifest_path)
  for split, arrays in splits.items():
    _replace_whole(os.path.join(folder, CACHE_FILE.format(split=split)),
                   lambda f, arrays=arrays: np.savez(f, **arrays))
  manifest = {
      'dataset': dataset, 'tfds_version': DATASETS[dataset].tfds_version,
      'splits': {s: {'examples': int(a['label'].shape[0]), 'sha256': _digest(a)}
                 for s, a in splits.items()}}
  text = json.dumps(manifest, indent=2, sort_keys=True) + '\n'
  _replace_whole(manifest_path, lambda f: f.write(text.encode()))
  return manifest


def _prepare_and_read(data_config: ml_collections.ConfigDict
                      ) -> tuple[dict[str, Split], dict[str, Any]]:
  """TFDS's full splits, prepared first where needed, and their source."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data_dir = _tfds_data_dir(data_config.data_dir)
  manual_dir = os.path.expanduser(data_config.manual_dir)
  builder = tfds.builder(data_config.dataset, data_dir=data_dir)
  version = DATASETS[data_config.dataset].tfds_version
  if str(builder.version) != version:
    raise DataError(f'tensorflow_datasets {tfds.__version__} builds '
                    f'{data_config.dataset} {builder.version}; cnn_jax reads '
                    f'{version} (input_pipeline.DATASETS)')
  if not builder.is_prepared():
    if os.path.isdir(builder.data_dir):
      # TFDS "reuses" an existing version folder, then finds nothing in it.
      raise DataError(f'{builder.data_dir} has no {TFDS_INFO}: TFDS did not '
                      f'prepare it, and will not prepare into it; move it '
                      f'away or delete it')
    if records.unwritable(data_dir):
      raise DataError(f'config.data.data_dir: cannot write in {data_dir} to '
                      f'prepare {data_config.dataset}; choose a writable '
                      f'folder')
    if manual_dir:
      check_manual_files(data_config.dataset, manual_dir)
  prepare = functools.partial(
      builder.download_and_prepare,
      download_config=tfds.download.DownloadConfig(
          manual_dir=manual_dir or None))
  # Process 0 prepares first: where the processes share the folder, the
  # others then find it ready instead of writing it at the same time.
  if parallel.is_main_process():
    prepare()
  parallel.sync('dataset prepared')
  if not parallel.is_main_process():
    prepare()
  full = {s: _read(builder, s) for s in _SPLITS}
  return full, {'source': 'tfds', 'folder': builder.data_dir,
                'dataset': data_config.dataset,
                'tfds_version': str(builder.version),
                'sha256': {s: _digest(a) for s, a in full.items()}}


def _read_full(data_config: ml_collections.ConfigDict
               ) -> tuple[dict[str, Split], dict[str, Any]]:
  """TFDS's full splits and their source: from the cache where there is
  one, else through TFDS, caching them."""
  folder = cache_folder(data_config)
  dataset = data_config.dataset
  why_not = None
  if data_config.cache:
    why_not = _not_a_cache(folder, dataset)
    if why_not is None:
      return read_cache(folder, dataset)
    if importlib.util.find_spec('tensorflow_datasets') is None:
      raise DataError(f'{folder} holds no decoded-split cache ({why_not}) '
                      f'and tensorflow_datasets, which makes one, is not '
                      f'installed; copy {", ".join(cache_files())} there '
                      f'from a machine where a run made them')
  full, source = _prepare_and_read(data_config)
  if data_config.cache and parallel.is_main_process():
    if any(os.path.exists(os.path.join(folder, CACHE_FILE.format(split=s)))
           for s in _SPLITS):
      logging.warning('%s: its cnn_jax_*.npz are no cache (%s); replacing '
                      'them with the splits TFDS read', folder, why_not)
    try:
      write_cache(folder, full, dataset)
    except OSError as e:
      # The data are TFDS's, checked: only later runs' start is slower.
      logging.warning('%s: the decoded splits could not be cached (%s); '
                      'later runs read them through TFDS again', folder,
                      _one_line(e))
  return full, source


# Full splits and their source read by this process, so that the points of
# a sweep read the data once (with config.data.cache on; mock data in tests
# turn it off).
_loaded: dict[tuple[str, str],
              tuple[dict[str, Split], dict[str, Any]]] = {}


def load_splits(data_config: ml_collections.ConfigDict) -> Splits:
  """Reads three splits: from memory, the cache, or else through TFDS.

  Validation is the tail of TFDS's train split, so model selection never
  sees the test split.

  Args:
    data_config: `config.data`.

  Returns:
    {'train', 'validation', 'test'} -> {'image': uint8 [N, 28, 28, 1],
    'label': int32 [N]}, with `source`: 'cache' or 'tfds', the folder, the
    TFDS version and the SHA-256 of TFDS's full train and test splits.

  Raises:
    DataError: a cache file that fails its checks, named, or data that
      cannot be prepared.
  """
  key = (data_config.dataset, _tfds_data_dir(data_config.data_dir))
  loaded = _loaded.get(key) if data_config.cache else None
  if loaded is None:
    loaded = _read_full(data_config)
    if data_config.cache:
      _loaded.clear()  # One dataset in memory at a time.
      _loaded[key] = loaded
  full, source = loaded
  n_val = data_config.num_validation_examples
  train = full['train']
  splits = {
      'train': {k: v[:-n_val] for k, v in train.items()},
      'validation': {k: v[-n_val:] for k, v in train.items()},
      'test': full['test'],
  }
  if data_config.num_train_examples > 0:
    splits['train'] = {k: v[:data_config.num_train_examples]
                       for k, v in splits['train'].items()}
  return Splits(splits, source)


def normalize(images: jnp.ndarray) -> jnp.ndarray:
  """uint8 pixels -> float32 in [0, 1], as torchvision's ToTensor gives the seed."""
  return images.astype(jnp.float32) / 255.0


def augment(rng: jax.Array, image: jnp.ndarray, *, flip: bool,
            shift: int) -> jnp.ndarray:
  """A random horizontal flip and a translation of up to `shift` pixels.

  Runs on the device inside the train step, one image at a time under vmap,
  so augmentation costs no host work. Clothing is roughly mirror-symmetric,
  so a flip keeps the label.

  Args:
    rng: this image's key.
    image: [height, width, channels].
    flip: whether to mirror the image with probability 1/2.
    shift: largest translation along each axis; the border fills with 0.

  Returns:
    An image of the same shape.
  """
  flip_rng, shift_rng = jax.random.split(rng)
  if flip:
    image = jnp.where(jax.random.bernoulli(flip_rng), image[:, ::-1], image)
  if shift:
    padded = jnp.pad(image, ((shift, shift), (shift, shift), (0, 0)))
    dy, dx = jax.random.randint(shift_rng, (2,), 0, 2 * shift + 1)
    image = jax.lax.dynamic_slice(padded, (dy, dx, 0), image.shape)
  return image


def device_batch_indices(rng: jax.Array, num_examples: int, batch_size: int,
                         num_devices: int, device_index) -> jnp.ndarray:
  """One epoch's example indices for one device: [steps, batch // devices].

  Every device draws the same global permutation and takes its own slice of
  each global batch, so a step sees the same examples whatever the device
  count. The last incomplete batch is dropped.
  """
  steps = num_examples // batch_size
  perm = jax.random.permutation(rng, num_examples)[:steps * batch_size]
  perm = perm.reshape(steps, num_devices, batch_size // num_devices)
  return perm[:, device_index]


def eval_steps(split: Split, batch_size: int) -> int:
  """The batches that hold a split, the last one padded."""
  return -(-split['label'].shape[0] // batch_size)


def shard_for_eval(split: Split, batch_size: int, num_devices: int, *,
                   steps: int | None = None) -> Split:
  """Pads a split and lays it out as [devices, steps, batch // devices, ...].

  Padding examples carry mask 0, so every example counts exactly once.
  `steps` (default: `eval_steps`) pads further, with whole batches of
  padding, so that splits of different sizes share one array shape.
  """
  n = split['label'].shape[0]
  steps = steps or eval_steps(split, batch_size)
  if steps < eval_steps(split, batch_size):
    raise ValueError(f'{steps} steps of {batch_size} cannot hold {n} examples')
  pad = steps * batch_size - n
  out = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)])
         for k, v in split.items()}
  out['mask'] = np.concatenate([np.ones(n, np.float32),
                                np.zeros(pad, np.float32)])
  # Step-major, then device: device d handles rows d of every step.
  return {k: v.reshape((steps, num_devices, batch_size // num_devices)
                       + v.shape[1:]).swapaxes(0, 1)
          for k, v in out.items()}
