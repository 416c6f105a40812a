"""Fashion-MNIST from TFDS, held on the device, shuffled and batched there.

The whole dataset is 70,000 x 784 bytes, so it is read once into arrays and
moved to the accelerator; each epoch then only draws a permutation of
indices on the device, leaving the host nothing to do per step.
"""

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

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

Split = dict[str, np.ndarray]


def missing_manual_files(manual_dir: str) -> list[str]:
  """The MANUAL_FILES absent from `manual_dir`."""
  return [f for f in MANUAL_FILES
          if not os.path.isfile(os.path.join(manual_dir, f))]


def _read(builder: tfds.core.DatasetBuilder, split: str) -> Split:
  chunks = list(tfds.as_numpy(builder.as_dataset(split=split,
                                                 batch_size=_READ_BATCH)))
  return {
      'image': np.concatenate([c['image'] for c in chunks]).astype(np.uint8),
      'label': np.concatenate([c['label'] for c in chunks]).astype(np.int32),
  }


def load_splits(data_config: ml_collections.ConfigDict) -> dict[str, Split]:
  """Prepares the TFDS dataset (checksums verified) and reads three splits.

  Validation is the tail of TFDS's train split, so model selection never
  sees the test split.

  Args:
    data_config: `config.data`.

  Returns:
    {'train', 'validation', 'test'} -> {'image': uint8 [N, 28, 28, 1],
    'label': int32 [N]}.
  """
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
  n_val = data_config.num_validation_examples
  splits = {
      'train': _read(builder, f'train[:-{n_val}]'),
      'validation': _read(builder, f'train[-{n_val}:]'),
      'test': _read(builder, 'test'),
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
