"""Fashion-MNIST from TFDS, held on the device, shuffled and batched there.

The whole dataset is 70,000 x 784 bytes, so it is read once into arrays and
moved to the accelerator; each epoch then only draws a permutation of
indices on the device, leaving the host nothing to do per step.

TFDS prepares the dataset (checksums verified) and, the first time, its
decoded splits are kept as arrays next to TFDS's own files
(`<data_dir>/<dataset>/<version>/cnn_jax_<split>.npz`, `config.data.cache`).
Later runs read those without importing TensorFlow, which starts them
faster (README) and lets machines without TensorFlow train.
"""

import dataclasses
import functools
import hashlib
import os

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
  # SHA-256 of each file TFDS's builder downloads, hence the ones
  # `config.data.manual_dir` needs: a bad copy is named before TFDS runs.
  manual_files: dict[str, str]
  # The name of each label, in label order (plots, predictions).
  class_names: tuple[str, ...]


# The model's input is 28x28 grey (IMAGE_SHAPE): datasets of that form only.
DATASETS = {
    'fashion_mnist': Dataset(
        num_classes=10, num_train=60_000, num_test=10_000, manual_files={
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

Split = dict[str, np.ndarray]


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


def _version_key(name: str) -> tuple[int, ...]:
  return tuple(int(p) if p.isdigit() else -1 for p in name.split('.'))


def find_cache(data_config: ml_collections.ConfigDict) -> str | None:
  """The newest version folder of the dataset that holds every cached split.

  The newest, since that is the version TFDS itself prepares and reads.
  """
  root = os.path.join(_tfds_data_dir(data_config.data_dir),
                      data_config.dataset)
  if not os.path.isdir(root):
    return None
  complete = [v for v in os.listdir(root) if all(
      os.path.isfile(os.path.join(root, v, CACHE_FILE.format(split=s)))
      for s in _SPLITS)]
  return (os.path.join(root, max(complete, key=_version_key))
          if complete else None)


def _prepare_and_read(data_config: ml_collections.ConfigDict
                      ) -> tuple[dict[str, Split], str]:
  """TFDS's full splits, prepared first where needed, and their folder."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data_dir = _tfds_data_dir(data_config.data_dir)
  manual_dir = os.path.expanduser(data_config.manual_dir)
  builder = tfds.builder(data_config.dataset, data_dir=data_dir)
  if not builder.is_prepared():
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
  return {s: _read(builder, s) for s in _SPLITS}, builder.data_dir


def _write_cache(folder: str, splits: dict[str, Split]) -> None:
  for split, arrays in splits.items():
    path = os.path.join(folder, CACHE_FILE.format(split=split))
    tmp = path + '.tmp.npz'  # np.savez adds .npz to names without it.
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # All or nothing: find_cache never sees half.


def _read_full(data_config: ml_collections.ConfigDict) -> dict[str, Split]:
  """TFDS's full splits: from the cache if there is one, else through TFDS."""
  folder = find_cache(data_config) if data_config.cache else None
  if folder:
    full = {}
    for split in _SPLITS:
      with np.load(os.path.join(folder, CACHE_FILE.format(split=split))) as f:
        full[split] = {'image': f['image'], 'label': f['label']}
    return full
  full, folder = _prepare_and_read(data_config)
  if data_config.cache and parallel.is_main_process():
    _write_cache(folder, full)
  return full


# Full splits read by this process, so that the points of a sweep read the
# data once (with config.data.cache on; mock data in tests turn it off).
_loaded: dict[tuple[str, str], dict[str, Split]] = {}


def load_splits(data_config: ml_collections.ConfigDict) -> dict[str, Split]:
  """Reads three splits: from memory, the cache, or else through TFDS.

  Validation is the tail of TFDS's train split, so model selection never
  sees the test split.

  Args:
    data_config: `config.data`.

  Returns:
    {'train', 'validation', 'test'} -> {'image': uint8 [N, 28, 28, 1],
    'label': int32 [N]}.
  """
  key = (data_config.dataset, _tfds_data_dir(data_config.data_dir))
  full = _loaded.get(key) if data_config.cache else None
  if full is None:
    full = _read_full(data_config)
    if data_config.cache:
      _loaded.clear()  # One dataset in memory at a time.
      _loaded[key] = full
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
  return splits


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
