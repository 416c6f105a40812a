"""Re-evaluates a trained run on the test set and draws what it learned.

  python -m cnn_jax.evaluate --workdir=DIR [--checkpoint=best|latest]

Restores the run's newest checkpoint: by default the weights of its best
validation epoch, those summary.json's test accuracy is of, so the two
agree; `--checkpoint=latest` takes the last epoch's instead. The model and
data come from DIR/config.json. Prints the test accuracy and loss and
writes matplotlib PNGs into DIR/plots/ (PLOTS):

  learning_curves.png     loss and accuracy per epoch, from metrics.jsonl
  confusion_matrix.png    true against predicted class over the test set
  per_class_accuracy.png  test accuracy of each class
  misclassified.png       test images the model gets wrong, both labels shown
  kernels.png             the first conv layer's kernels
  activations.png         every conv stage's activation maps, a few images
"""

import dataclasses
import math
import os
from typing import Any

from absl import flags
import jax
import jax.numpy as jnp
import matplotlib
from matplotlib import figure
import ml_collections
import numpy as np

from cnn_jax import cli
from cnn_jax import errors
from cnn_jax import input_pipeline
from cnn_jax import models
from cnn_jax import records
from cnn_jax import run as run_lib
from cnn_jax import train

FLAGS = flags.FLAGS

PLOTS_DIR = 'plots'
PLOTS = ('learning_curves.png', 'confusion_matrix.png',
         'per_class_accuracy.png', 'misclassified.png', 'kernels.png',
         'activations.png')
# Misclassified images shown, and test images whose activations are drawn.
_NUM_WRONG = 32
_NUM_ACTIVATION_IMAGES = 3
# Activation maps per row of a stage's mosaic in activations.png.
_MAPS_PER_ROW = 8


class PlotError(errors.UserError):
  """The plots cannot be written: a read-only or full run folder."""


@dataclasses.dataclass(frozen=True)
class Trained:
  """A run's model and weights, restored from its folder."""
  config: ml_collections.ConfigDict
  model: models.CNN
  variables: dict[str, Any]
  epoch: int
  checkpoint: str

  @property
  def class_names(self) -> tuple[str, ...]:
    return input_pipeline.DATASETS[self.config.data.dataset].class_names


def load(workdir: str, checkpoint: str = 'best') -> Trained:
  """The model of DIR/config.json with the weights of `checkpoint`.

  Raises run.RunFolderError for a folder without a run or a checkpoint.
  """
  config, variables, epoch = run_lib.restore_variables(workdir, checkpoint)
  model = models.create_model(config.model, bn_axis_name=None)
  return Trained(config, model, variables, epoch, checkpoint)


def logits(trained: Trained, images: np.ndarray,
           batch_size: int = 1000) -> np.ndarray:
  """The model's logits for uint8 images [N, 28, 28, 1], as [N, classes].

  Batches are padded to one size, so one program is compiled.
  """
  apply = jax.jit(lambda x: trained.model.apply(
      trained.variables, input_pipeline.normalize(x), train=False))
  batch_size = min(batch_size, len(images))
  out = []
  for start in range(0, len(images), batch_size):
    batch = images[start:start + batch_size]
    pad = batch_size - len(batch)
    batch = np.concatenate([batch, np.zeros((pad,) + batch.shape[1:],
                                            batch.dtype)])
    out.append(np.asarray(apply(batch))[:batch_size - pad])
  return np.concatenate(out)


def activation_maps(trained: Trained, images: np.ndarray) -> list[np.ndarray]:
  """Each conv stage's output after its activation, [N, H, W, C] per stage."""
  _, state = trained.model.apply(
      trained.variables, input_pipeline.normalize(images), train=False,
      mutable=['intermediates'])
  stages = len(trained.config.model.features)
  return [np.asarray(state['intermediates'][f'act{s + 1}'][0])
          for s in range(stages)]


def evaluate(workdir: str, checkpoint: str = 'best') -> dict[str, Any]:
  """Tests a run's checkpoint and writes the plots into DIR/plots/.

  Args:
    workdir: a run's folder.
    checkpoint: 'best' or 'latest' (run.restore_variables).

  Returns:
    {'test_accuracy', 'test_loss', 'num_test_examples', 'checkpoint',
    'epoch', 'plots' (the PNG paths)}.
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  trained = load(workdir, checkpoint)
  test = input_pipeline.load_splits(trained.config.data)['test']
  test_logits = logits(trained, test['image'],
                       trained.config.eval_batch_size)
  labels = test['label']
  # As in training's evaluation: cross-entropy against unsmoothed labels.
  loss = float(train.cross_entropy_loss(jnp.asarray(test_logits),
                                        jnp.asarray(labels)).mean())
  predicted = test_logits.argmax(-1)
  accuracy = float((predicted == labels).mean())
  history = records.read_json_lines(os.path.join(workdir,
                                                 records.METRICS_FILE))
  out_dir = os.path.join(workdir, PLOTS_DIR)
  try:
    os.makedirs(out_dir, exist_ok=True)
    _draw(trained, history, test, test_logits, accuracy, out_dir)
  except OSError as e:
    raise PlotError(f'cannot write the plots into {out_dir} '
                    f'({e.strerror or e})') from None
  return {'test_accuracy': accuracy, 'test_loss': loss,
          'num_test_examples': len(labels), 'checkpoint': checkpoint,
          'epoch': trained.epoch,
          'plots': [os.path.join(out_dir, name) for name in PLOTS]}


def _draw(trained: Trained, history: list[dict[str, Any]],
          test: dict[str, np.ndarray], test_logits: np.ndarray,
          accuracy: float, out_dir: str) -> None:
  def save(fig: figure.Figure, name: str) -> None:
    fig.savefig(os.path.join(out_dir, name), dpi=110)

  names = trained.class_names
  labels, predicted = test['label'], test_logits.argmax(-1)
  which = f'{trained.checkpoint} checkpoint, epoch {trained.epoch}'
  save(learning_curves(history, trained.config.label_smoothing),
       'learning_curves.png')
  save(confusion_matrix(labels, predicted, names,
                        f'Test set, {which}: accuracy {accuracy:.4f}'),
       'confusion_matrix.png')
  save(per_class_accuracy(labels, predicted, names, accuracy, which),
       'per_class_accuracy.png')
  probabilities = np.asarray(jax.nn.softmax(test_logits))
  save(misclassified(test['image'], labels, probabilities, names),
       'misclassified.png')
  save(kernels(trained.variables['params']['conv1']['kernel']),
       'kernels.png')
  # The first test image of each of the first few classes to appear.
  _, first = np.unique(labels, return_index=True)
  shown = np.sort(first)[:_NUM_ACTIVATION_IMAGES]
  images = test['image'][shown]
  save(activations(images, labels[shown], activation_maps(trained, images),
                   names, trained.config.model),
       'activations.png')


def learning_curves(history: list[dict[str, Any]],
                    label_smoothing: float) -> figure.Figure:
  """Loss and accuracy per epoch, training and validation side by side."""
  fig = figure.Figure(figsize=(10, 4), layout='constrained')
  ax_loss, ax_acc = fig.subplots(1, 2)
  epochs = [r['epoch'] for r in history]
  # The training loss is against smoothed targets, so it sits higher.
  smoothed = (f' (label smoothing {label_smoothing:g})' if label_smoothing
              else '')
  for ax, metric, ylabel in ((ax_loss, 'loss', 'cross-entropy'),
                             (ax_acc, 'accuracy', 'accuracy')):
    ax.plot(epochs, [r[f'train_{metric}'] for r in history], 'o-',
            label='train' + (smoothed if metric == 'loss' else ''))
    ax.plot(epochs, [r[f'val_{metric}'] for r in history], 'o-',
            label='validation')
    ax.set_xlabel('epoch')
    ax.set_ylabel(ylabel)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
  if history:
    best = max(history, key=lambda r: r['val_accuracy'])['epoch']
    for ax in (ax_loss, ax_acc):
      ax.axvline(best, color='gray', linestyle=':',
                 label=f'best validation (epoch {best})')
  for ax in (ax_loss, ax_acc):
    ax.legend(fontsize=8)
  fig.suptitle('Learning curves (metrics.jsonl)')
  return fig


def confusion_counts(labels: np.ndarray, predicted: np.ndarray,
                     num_classes: int) -> np.ndarray:
  """[true, predicted] -> number of test images."""
  counts = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(counts, (labels, predicted), 1)
  return counts


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray,
                     names: tuple[str, ...], title: str) -> figure.Figure:
  """Counts, coloured by the fraction of each true class."""
  n = len(names)
  counts = confusion_counts(labels, predicted, n)
  fractions = counts / np.maximum(counts.sum(1, keepdims=True), 1)
  fig = figure.Figure(figsize=(8, 7), layout='constrained')
  ax = fig.subplots()
  image = ax.imshow(fractions, cmap='Blues', vmin=0, vmax=1)
  for i in range(n):
    for j in range(n):
      ax.text(j, i, str(counts[i, j]), ha='center', va='center', fontsize=8,
              color='white' if fractions[i, j] > 0.5 else 'black')
  ax.set_xticks(range(n), names, rotation=45, ha='right')
  ax.set_yticks(range(n), names)
  ax.set_xlabel('predicted class')
  ax.set_ylabel('true class')
  ax.set_title(title)
  fig.colorbar(image, ax=ax, shrink=0.8, label='fraction of the true class')
  return fig


def per_class_accuracy(labels: np.ndarray, predicted: np.ndarray,
                       names: tuple[str, ...], accuracy: float,
                       which: str) -> figure.Figure:
  """One bar per class; the overall accuracy as a line."""
  counts = confusion_counts(labels, predicted, len(names))
  totals = counts.sum(1)
  per_class = np.diag(counts) / np.maximum(totals, 1)
  fig = figure.Figure(figsize=(7, 4.5), layout='constrained')
  ax = fig.subplots()
  rows = np.arange(len(names))
  ax.barh(rows, np.where(totals > 0, per_class, 0.0), color='C0')
  ax.axvline(accuracy, color='C3', linestyle='--')
  for row, value, total in zip(rows, per_class, totals):
    # Right of the axes, where no bar or line runs through them.
    ax.text(1.01, row, f'{value:.3f}' if total else 'no test images',
            transform=ax.get_yaxis_transform(), va='center', fontsize=9)
  ax.set_yticks(rows, names)
  ax.invert_yaxis()
  ax.set_xlim(0, 1)
  ax.set_xlabel('test accuracy')
  ax.set_title(f'Test accuracy per class ({which})\ndashed: all classes, '
               f'{accuracy:.4f}', fontsize=10)
  return fig


def misclassified(images: np.ndarray, labels: np.ndarray,
                  probabilities: np.ndarray,
                  names: tuple[str, ...]) -> figure.Figure:
  """The first test images the model gets wrong, with true and predicted
  labels and the predicted class's probability."""
  predicted = probabilities.argmax(-1)
  wrong = np.flatnonzero(predicted != labels)
  shown = wrong[:_NUM_WRONG]
  cols = 8
  rows = max(1, math.ceil(len(shown) / cols))
  fig = figure.Figure(figsize=(cols * 1.45, rows * 1.85),
                      layout='constrained')
  axes = fig.subplots(rows, cols, squeeze=False)
  for ax in axes.flat:
    ax.axis('off')
  for ax, i in zip(axes.flat, shown):
    ax.imshow(images[i, ..., 0], cmap='gray', vmin=0, vmax=255)
    ax.set_title(f'true: {names[labels[i]]}\npredicted: '
                 f'{names[predicted[i]]}\n({probabilities[i].max():.0%})',
                 fontsize=7)
  fig.suptitle(f'The first {len(shown)} of {len(wrong)} misclassified test '
               f'images (of {len(labels)})' if len(wrong) else
               'No test image is misclassified')
  return fig


def kernels(kernel: np.ndarray) -> figure.Figure:
  """The first conv layer's kernels, [k, k, 1, features], on one colour
  scale: red weighs a pixel up, blue down."""
  kernel = np.asarray(kernel)[:, :, 0, :]
  features = kernel.shape[-1]
  limit = float(np.abs(kernel).max())
  cols = min(features, 8)
  rows = math.ceil(features / cols)
  fig = figure.Figure(figsize=(cols * 1.1 + 1, rows * 1.2 + 0.6),
                      layout='constrained')
  axes = fig.subplots(rows, cols, squeeze=False)
  for ax in axes.flat:
    ax.axis('off')
  for c, ax in enumerate(axes.flat[:features]):
    image = ax.imshow(kernel[..., c], cmap='RdBu_r', vmin=-limit, vmax=limit)
    ax.set_title(f'filter {c}', fontsize=8)
  fig.colorbar(image, ax=axes, shrink=0.8, label='weight')
  side = kernel.shape[0]
  fig.suptitle(f'conv1: the {features} {side}x{side} kernels')
  return fig


def tile(maps: np.ndarray, per_row: int) -> np.ndarray:
  """[H, W, C] maps -> one 2-D mosaic, `per_row` maps a row, NaN between.

  Each map is scaled to [0, 1] on its own, so weak channels still show what
  they respond to.
  """
  height, width, channels = maps.shape
  low = maps.min((0, 1))
  span = np.maximum(maps.max((0, 1)) - low, 1e-12)
  maps = (maps - low) / span
  rows = math.ceil(channels / per_row)
  out = np.full((rows * (height + 1) - 1, per_row * (width + 1) - 1), np.nan)
  for c in range(channels):
    r, col = divmod(c, per_row)
    out[r * (height + 1):r * (height + 1) + height,
        col * (width + 1):col * (width + 1) + width] = maps[..., c]
  return out


def activations(images: np.ndarray, labels: np.ndarray,
                maps: list[np.ndarray], names: tuple[str, ...],
                model_config: ml_collections.ConfigDict) -> figure.Figure:
  """A row per image: the image, then each conv stage's activation maps."""
  mosaics = [[tile(m[i], _MAPS_PER_ROW) for m in maps]
             for i in range(len(images))]
  widths = [images.shape[2]] + [t.shape[1] for t in mosaics[0]]
  fig = figure.Figure(figsize=(12, 1.9 * len(images) + 0.4),
                      layout='constrained')
  axes = fig.subplots(len(images), 1 + len(maps), squeeze=False,
                      width_ratios=widths)
  norm = ' -> BatchNorm' if model_config.batch_norm else ''
  cmap = matplotlib.colormaps['magma'].with_extremes(bad='white')
  for i, (row, image) in enumerate(zip(axes, images)):
    row[0].imshow(image[..., 0], cmap='gray', vmin=0, vmax=255)
    row[0].set_title(names[labels[i]], fontsize=9)
    for stage, (ax, mosaic) in enumerate(zip(row[1:], mosaics[i])):
      ax.imshow(mosaic, cmap=cmap)
      if i == 0:
        fmap = maps[stage][i]
        ax.set_title(f'conv{stage + 1}{norm} -> {model_config.activation}: '
                     f'{fmap.shape[-1]} maps of {fmap.shape[0]}x'
                     f'{fmap.shape[1]}', fontsize=9)
    for ax in row:
      ax.axis('off')
  fig.suptitle('Activation maps of test images (each map scaled to its own '
               'range; bright = strong)', fontsize=10)
  return fig


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])}')
  cli.start()
  try:
    result = evaluate(FLAGS.workdir, FLAGS.checkpoint)
  except errors.UserError as e:
    cli.fail(str(e))
  print(f'test_accuracy {result["test_accuracy"]:.4f}  test_loss '
        f'{result["test_loss"]:.4f}  ({result["num_test_examples"]} test '
        f'images; {result["checkpoint"]} checkpoint, epoch '
        f'{result["epoch"]})')
  print(f'plots in {os.path.dirname(result["plots"][0])}: '
        f'{", ".join(os.path.basename(p) for p in result["plots"])}')


if __name__ == '__main__':
  cli.define_flags(config=False, distributed=False)
  flags.DEFINE_enum('checkpoint', 'best', list(run_lib.CHECKPOINT_CHOICES),
                    'best: the weights of the best validation epoch (those '
                    "summary.json's test accuracy is of); latest: the last "
                    "epoch's.")
  cli.run(main)
