"""The PyTorch yardstick is the seed's model and reads the real files."""

import torch

from cnn_jax import torch_reference
import _util


def test_convnet1_is_the_seed_model():
  model = torch_reference.convnet1()
  # The same count as the JAX model (models_test): the same architecture.
  assert sum(p.numel() for p in model.parameters()) == 29_034
  assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_test_split_is_read_from_the_idx_files():
  data = torch_reference.load(_util.MANUAL_DIR, 't10k')
  images, labels = data.tensors
  assert images.shape == (10_000, 1, 28, 28)
  assert 0.0 <= float(images.min()) and float(images.max()) == 1.0
  assert sorted(torch.bincount(labels).tolist()) == [1000] * 10


def test_throughput_measures_both_loops():
  result = torch_reference.throughput(batch_size=8, steps=3, repeats=1)
  assert result['train_images_per_sec'] > 0
  assert result['step_only_images_per_sec'] > 0


def test_device_loader_shuffles_every_example_once_per_epoch():
  """The GPU path's loader, run here on CPU tensors."""
  data = torch.utils.data.TensorDataset(torch.arange(10.0), torch.arange(10))
  batches = list(torch_reference.DeviceLoader(data, batch_size=4,
                                              shuffle=True, drop_last=True))
  assert [len(y) for _, y in batches] == [4, 4]
  seen = torch.cat([y for _, y in batches]).tolist()
  assert len(set(seen)) == 8 and all(0 <= i < 10 for i in seen)
  batches = list(torch_reference.DeviceLoader(data, batch_size=4,
                                              shuffle=False))
  assert torch.cat([y for _, y in batches]).tolist() == list(range(10))
