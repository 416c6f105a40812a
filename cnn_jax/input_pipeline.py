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

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnn_jax import parallel

# The files TFDS's fashion_mnist builder downloads, hence the ones manual_dir needs.
MANUAL_FILES = (
    'train-images-idx3-ubyte.gz',
    'train-labels-idx1-ubyte.gz',
    't10k-images-idx3-ubyte.gz',
    't10k-labels-idx1-ubyte.gz',
)
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
  builder = tfds.builder(data_config.dataset,
                         data_dir=data_config.data_dir or None)
  prepare = functools.partial(
      builder.download_and_prepare,
      download_config=tfds.download.DownloadConfig(
          manual_dir=data_config.manual_dir or None))
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


def load_splits(data_config: ml_collections.ConfigDict) -> dict[str, Split]:
  """Reads three splits: from the cache if there is one, else through TFDS.

  Validation is the tail of TFDS's train split, so model selection never
  sees the test split.

  Args:
    data_config: `config.data`.

  Returns:
    {'train', 'validation', 'test'} -> {'image': uint8 [N, 28, 28, 1],
    'label': int32 [N]}.
  """
  folder = find_cache(data_config) if data_config.cache else None
  if folder:
    full = {}
    for split in _SPLITS:
      with np.load(os.path.join(folder, CACHE_FILE.format(split=split))) as f:
        full[split] = {'image': f['image'], 'label': f['label']}
  else:
    full, folder = _prepare_and_read(data_config)
    if data_config.cache and parallel.is_main_process():
      _write_cache(folder, full)
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


def shard_for_eval(split: Split, batch_size: int, num_devices: int) -> Split:
  """Pads a split and lays it out as [devices, steps, batch // devices, ...].

  Padding examples carry mask 0, so every example counts exactly once.
  """
  n = split['label'].shape[0]
  steps = -(-n // batch_size)
  pad = steps * batch_size - n
  out = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)])
         for k, v in split.items()}
  out['mask'] = np.concatenate([np.ones(n, np.float32),
                                np.zeros(pad, np.float32)])
  # Step-major, then device: device d handles rows d of every step.
  return {k: v.reshape((steps, num_devices, batch_size // num_devices)
                       + v.shape[1:]).swapaxes(0, 1)
          for k, v in out.items()}
