"""The seed's PyTorch `convnet1`, written plainly, as the benchmark's yardstick.

Only `cnn_jax.benchmark` uses this, always in a subprocess of its own, so
PyTorch's and XLA's thread pools never share the CPU. PyTorch is an optional
extra (`pip install -e .[bench]`). The data are the same four IDX files TFDS
prepares from, read with numpy as a user without torchvision would.

  python -m cnn_jax.torch_reference throughput --batch_size=128 --threads=2
  python -m cnn_jax.torch_reference time_to_target --manual_dir=DIR
  ... --device=cuda [--compile]   # on a GPU: data held there, eager or
                                  # torch.compile'd

Each command prints one JSON line. On the CPU the data go through a
shuffling DataLoader, as the seed's code does; on a GPU they are held on the
device and shuffled there, as the JAX trainer does, so that neither side
waits on host copies.
"""

import argparse
import gzip
import json
import os
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class convnet1(nn.Module):  # pylint: disable=invalid-name
  """The seed's model, layer for layer (29,034 parameters)."""

  def __init__(self):
    super().__init__()
    self.conv1 = nn.Conv2d(1, 16, kernel_size=5, stride=1, padding=2)
    self.batch1 = nn.BatchNorm2d(16)
    self.relu1 = nn.ReLU()
    self.pool1 = nn.MaxPool2d(kernel_size=2)
    self.conv2 = nn.Conv2d(16, 32, kernel_size=5, stride=1, padding=2)
    self.batch2 = nn.BatchNorm2d(32)
    self.relu2 = nn.ReLU()
    self.pool2 = nn.MaxPool2d(kernel_size=2)
    self.fc = nn.Linear(32 * 7 * 7, 10)

  def forward(self, x):
    x = self.pool1(self.relu1(self.batch1(self.conv1(x))))
    x = self.pool2(self.relu2(self.batch2(self.conv2(x))))
    return self.fc(x.view(x.size(0), -1))


def _read_idx(path: str) -> np.ndarray:
  with gzip.open(path, 'rb') as f:
    data = f.read()
  ndim = data[3]
  shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big')
           for i in range(ndim)]
  return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(manual_dir: str, split: str) -> TensorDataset:
  """'train' or 't10k' as NCHW float tensors in [0, 1], like ToTensor."""
  images = _read_idx(os.path.join(manual_dir, f'{split}-images-idx3-ubyte.gz'))
  labels = _read_idx(os.path.join(manual_dir, f'{split}-labels-idx1-ubyte.gz'))
  x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
  return TensorDataset(x, torch.from_numpy(labels.astype(np.int64)))


class DeviceLoader:
  """A shuffling loader over tensors already on the device (GPU runs)."""

  def __init__(self, data: TensorDataset, batch_size: int, shuffle: bool,
               drop_last: bool = False):
    self.x, self.y = data.tensors
    self.batch_size, self.shuffle, self.drop_last = (batch_size, shuffle,
                                                     drop_last)

  def __iter__(self):
    n = self.x.shape[0]
    order = (torch.randperm(n, device=self.x.device) if self.shuffle
             else torch.arange(n, device=self.x.device))
    stop = n - n % self.batch_size if self.drop_last else n
    for i in range(0, stop, self.batch_size):
      idx = order[i:i + self.batch_size]
      yield self.x[idx], self.y[idx]


def loader(data: TensorDataset, device: str, **kwargs):
  """The seed's DataLoader on the CPU; the data on the device elsewhere."""
  if device == 'cpu':
    return DataLoader(data, **kwargs)
  return DeviceLoader(TensorDataset(*(t.to(device) for t in data.tensors)),
                      **kwargs)


def _sync(device: str) -> None:
  if device == 'cuda':
    torch.cuda.synchronize()


def _model(device: str, compile_model: bool) -> nn.Module:
  torch.backends.cudnn.benchmark = True
  model = convnet1().to(device)
  return torch.compile(model) if compile_model else model


def train_epoch(model, loader, optimizer, loss_fn, max_steps=None) -> int:
  """The seed's training loop; returns how many images it trained on."""
  model.train()
  seen = 0
  for step, (x, y) in enumerate(loader):
    if max_steps is not None and step == max_steps:
      break
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    seen += x.shape[0]
  return seen


def accuracy(model, loader) -> float:
  model.eval()
  correct = total = 0
  with torch.no_grad():
    for x, y in loader:
      correct += (model(x).argmax(1) == y).sum().item()
      total += y.shape[0]
  return correct / total


def throughput(batch_size: int, steps: int, repeats: int, device: str = 'cpu',
               compile_model: bool = False) -> dict:
  """Steady-state training images/s on random data of Fashion-MNIST's shape.

  Two numbers: the plain loop over a shuffling loader (what the seed's
  code runs), and the same steps on one batch already in memory (PyTorch's
  compute alone). Each is the best of `repeats` timings of `steps` steps,
  after warm-up steps (which include torch.compile's compilation).
  """
  torch.manual_seed(0)
  n = batch_size * steps
  data = TensorDataset(torch.rand(n, 1, 28, 28), torch.randint(0, 10, (n,)))
  batches = loader(data, device, batch_size=batch_size, shuffle=True,
                   drop_last=True)
  model = _model(device, compile_model)
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
  loss_fn = nn.CrossEntropyLoss()
  train_epoch(model, batches, optimizer, loss_fn, max_steps=10)  # warm-up
  _sync(device)
  loop = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    seen = train_epoch(model, batches, optimizer, loss_fn)
    _sync(device)
    loop.append(seen / (time.perf_counter() - t0))
  x, y = (t[:batch_size].to(device) for t in data.tensors)
  step_only = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(steps):
      optimizer.zero_grad()
      loss_fn(model(x), y).backward()
      optimizer.step()
    _sync(device)
    step_only.append(steps * batch_size / (time.perf_counter() - t0))
  return {'train_images_per_sec': max(loop),
          'step_only_images_per_sec': max(step_only)}


def time_to_target(manual_dir: str, target: float, batch_size: int,
                   max_epochs: int, device: str = 'cpu',
                   compile_model: bool = False) -> dict:
  """The seed's recipe (Adam 1e-3, cross-entropy) until test accuracy >= target.

  The test set is read once at the end of each epoch.
  """
  torch.manual_seed(0)
  train_loader = loader(load(manual_dir, 'train'), device,
                        batch_size=batch_size, shuffle=True)
  test_loader = loader(load(manual_dir, 't10k'), device, batch_size=1000,
                       shuffle=False)
  model = _model(device, compile_model)
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
  loss_fn = nn.CrossEntropyLoss()
  history = []
  for epoch in range(1, max_epochs + 1):
    train_epoch(model, train_loader, optimizer, loss_fn)
    history.append(accuracy(model, test_loader))
    if history[-1] >= target:
      return {'reached': True, 'epochs': epoch, 'test_accuracy': history}
  return {'reached': False, 'epochs': max_epochs, 'test_accuracy': history}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('command', choices=['throughput', 'time_to_target'])
  parser.add_argument('--threads', type=int, default=2)
  parser.add_argument('--batch_size', type=int, default=128)
  parser.add_argument('--steps', type=int, default=100)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--manual_dir', default='')
  parser.add_argument('--target', type=float, default=0.9)
  parser.add_argument('--max_epochs', type=int, default=15)
  parser.add_argument('--device', choices=['cpu', 'cuda'], default='cpu')
  parser.add_argument('--compile', action='store_true',
                      help='torch.compile the model')
  args = parser.parse_args()
  if args.device == 'cuda' and not torch.cuda.is_available():
    parser.error('--device=cuda, but PyTorch sees no CUDA device')
  torch.set_num_threads(args.threads)
  if args.command == 'throughput':
    result = throughput(args.batch_size, args.steps, args.repeats,
                        args.device, args.compile)
  else:
    result = time_to_target(args.manual_dir, args.target, args.batch_size,
                            args.max_epochs, args.device, args.compile)
  result.update(torch_version=torch.__version__,
                threads=torch.get_num_threads(), device=args.device,
                compiled=args.compile)
  print(json.dumps(result))


if __name__ == '__main__':
  main()
