"""TFDS loading, on-device batching and augmentation."""

import hashlib
import json
import os
import shutil

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


@pytest.mark.slow
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
  assert splits.source['tfds_version'] == str(builder.version)
  again = input_pipeline.load_splits(config)
  for name, split in splits.items():
    for key in ('image', 'label'):
      np.testing.assert_array_equal(again[name][key], split[key])
      assert again[name][key].dtype == split[key].dtype


# --- The decoded-split cache ------------------------------------------------

_FASHION = input_pipeline.DATASETS['fashion_mnist']


def _full_splits():
  """Arrays of Fashion-MNIST's split sizes, as a cache holds them (zeros)."""
  return {split: {'image': np.zeros((n, 28, 28, 1), np.uint8),
                  'label': np.arange(n, dtype=np.int32) % 10}
          for split, n in (('train', _FASHION.num_train),
                           ('test', _FASHION.num_test))}


def _version_folder(data_dir, version='3.0.1', *, prepared=True):
  """A TFDS version folder; `prepared`: with TFDS's dataset_info.json."""
  folder = data_dir / 'fashion_mnist' / version
  folder.mkdir(parents=True)
  if prepared:
    (folder / 'dataset_info.json').write_text(json.dumps(
        {'name': 'fashion_mnist', 'version': version}))
  return folder


def _cache_config(data_dir):
  config = _util.tiny_config().data
  config.update(data_dir=str(data_dir), cache=True)
  return config


@pytest.fixture(scope='module')
def valid_cache(tmp_path_factory):
  """A data_dir whose cache passes every check; tests link, never change it."""
  data_dir = tmp_path_factory.mktemp('valid_cache')
  input_pipeline.write_cache(str(_version_folder(data_dir)), _full_splits(),
                             'fashion_mnist')
  return data_dir


def _copy(data_dir, dest):
  """Hard links of `data_dir`'s files: a test replaces, never edits, one."""
  shutil.copytree(data_dir, dest, copy_function=os.link)
  return dest, dest / 'fashion_mnist' / '3.0.1'


def test_only_the_cache_tfds_prepared_and_cnn_jax_wrote_is_read(
    tmp_path, valid_cache):
  config = _cache_config(tmp_path)
  assert input_pipeline.find_cache(config) is None
  # A foreign folder of a version TFDS does not read: 2,000 images.
  foreign = _version_folder(tmp_path, '3.0.2')
  for split, n in (('train', 2000), ('test', 100)):
    np.savez(foreign / input_pipeline.CACHE_FILE.format(split=split),
             image=np.zeros((n, 28, 28, 1), np.uint8),
             label=np.zeros(n, np.int32))
  assert input_pipeline.find_cache(config) is None
  # The version TFDS reads, written by write_cache, but not TFDS-prepared.
  folder = _version_folder(tmp_path, prepared=False)
  input_pipeline.write_cache(str(folder), _full_splits(), 'fashion_mnist')
  assert input_pipeline.find_cache(config) is None
  shutil.copy(valid_cache / 'fashion_mnist/3.0.1/dataset_info.json', folder)
  assert input_pipeline.find_cache(config) == str(folder)
  # Without the manifest that ties the arrays to what made them: none.
  os.remove(folder / input_pipeline.MANIFEST)
  assert input_pipeline.find_cache(config) is None


@pytest.mark.parametrize('case', [
    'negative label', 'label out of range', 'float images',
    'length mismatch', 'seven test images', 'changed after writing'])
def test_a_cache_that_contradicts_the_dataset_is_refused(tmp_path,
                                                         valid_cache, case):
  splits = _full_splits()
  test = splits['test']
  expect = {
      'negative label': 'labels span -1..9; expected 0..9',
      'label out of range': 'labels span 0..10; expected 0..9',
      'float images': 'image is float32 (10000, 28, 28, 1); expected uint8 '
                      '(10000, 28, 28, 1)',
      'length mismatch': 'label is int32 (9999,); expected int32 (10000,)',
      'seven test images': 'image is uint8 (7, 28, 28, 1); expected uint8 '
                           '(10000, 28, 28, 1)',
      'changed after writing': 'its SHA-256 differs from the one '
                               'cnn_jax_cache.json records',
  }[case]
  if case == 'negative label':
    test['label'][3] = -1
  elif case == 'label out of range':
    test['label'][3] = 10
  elif case == 'float images':
    test['image'] = test['image'].astype(np.float32) / 255
  elif case == 'length mismatch':
    test['label'] = test['label'][1:]
  elif case == 'seven test images':
    splits['test'] = {k: v[:7] for k, v in test.items()}
  data_dir, folder = _copy(valid_cache, tmp_path / 'tfds')
  path = folder / input_pipeline.CACHE_FILE.format(split='test')
  if case == 'changed after writing':  # One label, manifest kept.
    test['label'][0] = 1
    os.remove(path)
    np.savez(path, **test)
  else:  # Manifest and arrays agree with each other.
    for name in os.listdir(folder):
      if name.startswith('cnn_jax_'):
        os.remove(folder / name)
    input_pipeline.write_cache(str(folder), splits, 'fashion_mnist')
  with pytest.raises(input_pipeline.DataError) as e:
    input_pipeline.load_splits(_cache_config(data_dir))
  assert str(e.value) == (f'{path}: {expect}; delete {folder}/cnn_jax_*.npz '
                          f'to rebuild the cache from TFDS')


def test_a_cache_without_its_manifest_is_replaced_through_tfds(tmp_path):
  folder = _version_folder(tmp_path)
  for split, n in (('train', 2000), ('test', 100)):  # Not written by cnn_jax.
    np.savez(folder / input_pipeline.CACHE_FILE.format(split=split),
             image=np.zeros((n, 28, 28, 1), np.uint8),
             label=np.zeros(n, np.int32))
  with tfds.testing.mock_data(num_examples=24):
    splits = input_pipeline.load_splits(_cache_config(tmp_path))
  assert splits['test']['label'].shape == (24,)  # TFDS's (mock) data.
  assert splits.source['source'] == 'tfds'
  manifest = json.loads((folder / input_pipeline.MANIFEST).read_text())
  assert manifest['splits']['test']['examples'] == 24


def test_a_version_folder_tfds_did_not_prepare_is_named(tmp_path):
  folder = _version_folder(tmp_path, prepared=False)
  input_pipeline.write_cache(str(folder), _full_splits(), 'fashion_mnist')
  with pytest.raises(input_pipeline.DataError) as e:
    input_pipeline.load_splits(_cache_config(tmp_path))
  assert str(e.value) == (f'{folder} has no dataset_info.json: TFDS did not '
                          f'prepare it, and will not prepare into it; move it '
                          f'away or delete it')


# --- Where the data came from -----------------------------------------------


def test_load_splits_says_where_the_data_came_from(tmp_path, valid_cache):
  data_dir, folder = _copy(valid_cache, tmp_path / 'tfds')
  splits = input_pipeline.load_splits(_cache_config(data_dir))
  manifest = json.loads((folder / input_pipeline.MANIFEST).read_text())
  assert splits.source == {
      'source': 'cache', 'folder': str(folder), 'dataset': 'fashion_mnist',
      'tfds_version': '3.0.1',
      'sha256': {s: manifest['splits'][s]['sha256'] for s in ('train', 'test')}}
  full = _full_splits()['test']
  assert manifest['splits']['test']['sha256'] == hashlib.sha256(
      full['image'].tobytes() + full['label'].tobytes()).hexdigest()


def test_summary_records_the_data_source(trained_run):
  summary = json.loads((trained_run / 'summary.json').read_text())
  data = summary['data']
  assert data['source'] == 'tfds' and data['dataset'] == 'fashion_mnist'
  assert data['tfds_version'] == '3.0.1'
  assert set(data['sha256']) == {'train', 'test'}


# --- Damaged cache files ----------------------------------------------------


def _damage(path, case):
  data = path.read_bytes()
  os.remove(path)  # A hard link: the shared original stays whole.
  if case == 'truncated':
    path.write_bytes(data[:len(data) // 2])
  elif case == 'flipped bytes':
    middle = len(data) // 2
    path.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in
                                           data[middle:middle + 8])
                     + data[middle + 8:])
  elif case == 'zero bytes':
    path.write_bytes(b'')
  elif case == 'missing array':
    np.savez(path, image=np.zeros((10_000, 28, 28, 1), np.uint8))
  elif case == 'object array':
    np.savez(path, image=np.zeros((10_000, 28, 28, 1), np.uint8),
             label=np.array([None] * 10_000, object))
  elif case == 'wrong image shape':
    np.savez(path, image=np.zeros((10_000, 32, 32, 1), np.uint8),
             label=np.zeros(10_000, np.int32))
  elif case == 'a folder':
    path.mkdir()


@pytest.mark.parametrize('case', [
    'truncated', 'flipped bytes', 'zero bytes', 'missing array',
    'object array', 'wrong image shape', 'a folder'])
def test_a_damaged_cache_file_is_one_data_error(tmp_path, valid_cache, case):
  data_dir, folder = _copy(valid_cache, tmp_path / 'tfds')
  path = folder / input_pipeline.CACHE_FILE.format(split='test')
  _damage(path, case)
  with pytest.raises(input_pipeline.DataError) as e:
    input_pipeline.load_splits(_cache_config(data_dir))
  message = str(e.value)
  assert message.startswith(f'{path}') and '\n' not in message
  if case == 'a folder':  # Not the cache's to delete.
    assert message == (f'{path} is a folder, where the decoded-split cache '
                       f'keeps a file; remove it')
  else:
    assert message.endswith(f'delete {folder}/cnn_jax_*.npz to rebuild the '
                            f'cache from TFDS'), message


def test_a_bad_cache_stops_a_run_before_its_workdir_is_written(tmp_path,
                                                               valid_cache):
  from cnn_jax import train  # pylint: disable=g-import-not-at-top
  data_dir, folder = _copy(valid_cache, tmp_path / 'tfds')
  _damage(folder / input_pipeline.CACHE_FILE.format(split='train'),
          'wrong image shape')
  config = _util.tiny_config()
  config.data.update(data_dir=str(data_dir), cache=True)
  with pytest.raises(input_pipeline.DataError, match='expected uint8'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_the_cache_writer_leaves_no_temp_file_when_it_fails(tmp_path):
  folder = _version_folder(tmp_path)
  train = folder / input_pipeline.CACHE_FILE.format(split='train')
  train.mkdir()  # In the way of the file.
  with pytest.raises(OSError):
    input_pipeline.write_cache(str(folder), _full_splits(), 'fashion_mnist')
  assert sorted(os.listdir(folder)) == ['cnn_jax_train.npz',
                                        'dataset_info.json']


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
