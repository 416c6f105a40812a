"""TFDS loading, on-device batching and augmentation."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from cnn_jax import input_pipeline
import _util


def test_load_splits_shapes_dtypes_and_cap():
  config = _util.tiny_config().data
  config.num_train_examples = 10
  with tfds.testing.mock_data(num_examples=24):
    splits = input_pipeline.load_splits(config)
  assert set(splits) == {'train', 'validation', 'test'}
  for split in splits.values():
    assert split['image'].dtype == np.uint8
    assert split['image'].shape[1:] == (28, 28, 1)
    assert split['label'].dtype == np.int32
    assert split['label'].shape == split['image'].shape[:1]
  assert splits['train']['label'].shape == (10,)


def test_real_fashion_mnist_from_the_manual_dir(real_data_dir):
  # Offline, `make test` sets CNN_JAX_MANUAL_DIR; elsewhere TFDS downloads.
  config = _util.tiny_config().data
  config.manual_dir = _util.MANUAL_DIR
  config.data_dir = real_data_dir
  config.num_validation_examples = 5000
  config.num_train_examples = -1
  config.cache = True
  splits = input_pipeline.load_splits(config)
  sizes = {k: v['label'].shape[0] for k, v in splits.items()}
  assert sizes == {'train': 55_000, 'validation': 5_000, 'test': 10_000}
  # The official test split holds 1,000 images of each of the 10 classes.
  assert np.bincount(splits['test']['label']).tolist() == [1000] * 10
  assert splits['train']['image'].max() == 255
  # Validation is exactly TFDS's own slice of the tail of its train split.
  builder = tfds.builder('fashion_mnist', data_dir=real_data_dir)
  tail = next(iter(tfds.as_numpy(builder.as_dataset(split='train[-5000:]',
                                                    batch_size=5000))))
  np.testing.assert_array_equal(splits['validation']['image'], tail['image'])
  np.testing.assert_array_equal(splits['validation']['label'], tail['label'])

  # The first read left the decoded splits in TFDS's folder; the next read
  # takes them from there and gives the same arrays.
  assert input_pipeline.find_cache(config) == builder.data_dir
  again = input_pipeline.load_splits(config)
  for name, split in splits.items():
    for key in ('image', 'label'):
      np.testing.assert_array_equal(again[name][key], split[key])
      assert again[name][key].dtype == split[key].dtype


def test_cache_is_found_by_newest_complete_version(tmp_path):
  config = _util.tiny_config().data
  config.data_dir = str(tmp_path)
  assert input_pipeline.find_cache(config) is None
  for version, splits in (('3.0.1', ('train', 'test')), ('3.0.10', ('train',)),
                          ('3.0.2', ('train', 'test'))):
    folder = tmp_path / 'fashion_mnist' / version
    folder.mkdir(parents=True)
    for split in splits:
      (folder / input_pipeline.CACHE_FILE.format(split=split)).write_bytes(b'')
  # 3.0.10 is newest but lacks its test split.
  assert input_pipeline.find_cache(config) == str(
      tmp_path / 'fashion_mnist' / '3.0.2')


def test_missing_manual_files(tmp_path):
  assert len(input_pipeline.missing_manual_files(str(tmp_path))) == 4
  (tmp_path / 'train-images-idx3-ubyte.gz').write_bytes(b'')
  missing = input_pipeline.missing_manual_files(str(tmp_path))
  assert 'train-images-idx3-ubyte.gz' not in missing and len(missing) == 3


def test_device_batches_are_the_same_global_batches_on_any_device_count():
  rng = jax.random.key(3)
  one = input_pipeline.device_batch_indices(rng, 103, 10, 1, 0)
  halves = [input_pipeline.device_batch_indices(rng, 103, 10, 2, d)
            for d in range(2)]
  assert one.shape == (10, 10)  # 103 // 10 steps; the remainder is dropped.
  np.testing.assert_array_equal(np.concatenate(halves, axis=1), one)
  assert len(np.unique(one)) == 100
  other = input_pipeline.device_batch_indices(jax.random.key(4), 103, 10, 1, 0)
  assert not np.array_equal(one, other)


def test_shard_for_eval_counts_every_example_once():
  n = 23
  split = {'image': np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1),
           'label': np.arange(n, dtype=np.int32)}
  sharded = input_pipeline.shard_for_eval(split, batch_size=10, num_devices=2)
  assert sharded['label'].shape == (2, 3, 5)
  labels = sharded['label'][sharded['mask'] > 0]
  assert sorted(labels.tolist()) == list(range(n))
  assert sharded['mask'].sum() == n


def test_shard_for_eval_pads_to_a_given_number_of_steps():
  n = 23
  split = {'image': np.zeros((n, 1, 1, 1), np.uint8),
           'label': np.arange(n, dtype=np.int32)}
  assert input_pipeline.eval_steps(split, 10) == 3
  sharded = input_pipeline.shard_for_eval(split, batch_size=10, num_devices=2,
                                          steps=5)
  assert sharded['label'].shape == (2, 5, 5)
  assert sharded['mask'].sum() == n
  assert not sharded['mask'][:, 3:].any()  # Whole batches of padding.
  with pytest.raises(ValueError, match='2 steps of 10 cannot hold 23'):
    input_pipeline.shard_for_eval(split, batch_size=10, num_devices=2,
                                  steps=2)


def test_normalize_maps_pixels_to_unit_interval():
  x = input_pipeline.normalize(jnp.array([0, 255], jnp.uint8))
  np.testing.assert_allclose(x, [0.0, 1.0])
  assert x.dtype == jnp.float32


def test_augment_off_is_identity_and_on_moves_pixels():
  image = jnp.asarray(np.random.RandomState(0).rand(28, 28, 1), jnp.float32)
  rng = jax.random.key(0)
  same = input_pipeline.augment(rng, image, flip=False, shift=0)
  np.testing.assert_array_equal(same, image)
  outs = [input_pipeline.augment(jax.random.key(i), image, flip=True, shift=2)
          for i in range(8)]
  assert all(o.shape == image.shape for o in outs)
  assert any(not np.array_equal(o, image) for o in outs)


def test_flip_mirrors_left_right():
  image = jnp.arange(6, dtype=jnp.float32).reshape(2, 3, 1)
  outs = {tuple(np.asarray(input_pipeline.augment(
      jax.random.key(i), image, flip=True, shift=0)).ravel())
          for i in range(16)}
  assert outs == {tuple(np.asarray(image).ravel()),
                  tuple(np.asarray(image[:, ::-1]).ravel())}


def test_a_corrupted_manual_file_is_named_before_tfds_runs(tmp_path):
  manual = tmp_path / 'manual'
  manual.mkdir()
  for name in input_pipeline.MANUAL_FILES:
    os.symlink(os.path.join(_util.MANUAL_DIR, name), manual / name)
  broken = manual / 't10k-labels-idx1-ubyte.gz'
  data = open(broken, 'rb').read()
  os.remove(broken)
  broken.write_bytes(data[:len(data) // 2])  # Truncated.
  config = _util.tiny_config().data
  config.update(data_dir=str(tmp_path / 'tfds'), manual_dir=str(manual))
  with pytest.raises(input_pipeline.DataError) as e:
    input_pipeline.load_splits(config)
  assert str(e.value) == (
      f'{broken} is not the official t10k-labels-idx1-ubyte.gz (its SHA-256 '
      f'differs: truncated or corrupted?); replace it')


def test_an_unwritable_data_dir_is_named():
  config = _util.tiny_config().data
  config.data_dir = '/sys/tfds'  # Read-only even for root.
  with pytest.raises(input_pipeline.DataError,
                     match='config.data.data_dir: cannot write in /sys/tfds '
                           'to prepare fashion_mnist; choose a writable'):
    input_pipeline.load_splits(config)
