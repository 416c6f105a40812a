"""The claims' analyses: each reads a sweep's points and returns a markdown
table and the numbers behind it (results.json), and draws a plot.

A point is {'values': its sweep labels, 'folder', 'config', 'summary',
'history': its metrics.jsonl records, 'test_accuracy': None if it diverged}
(`main.read_points`).
"""

import collections
import functools
import json
import os
import statistics
from typing import Any, Callable, Sequence

import ml_collections
import numpy as np
from scipy import stats

from cnn_jax import evaluate
from cnn_jax import input_pipeline
from cnn_jax import records
from cnn_jax import report
from experiments.claims import invariance
from experiments.claims import marks

INVARIANCE_FILE = 'invariance.json'
SHIFTS = tuple(range(7))
FEATURE_SHIFTS = (1, 2)
# Resamples of the bootstrap confidence intervals, and their fixed seed.
BOOTSTRAP = 10_000


def _groups(points: Sequence[dict[str, Any]], fields: Sequence[str]
            ) -> dict[tuple, list[dict[str, Any]]]:
  """The points by their values of `fields`: the sweep's label where the
  sweep varies a field, else the value the point was trained with."""
  def value(point, field):
    if field in point['values']:
      return point['values'][field]
    return report.config_field(point['config'], field)
  groups = collections.defaultdict(list)
  for p in points:
    groups[tuple(value(p, f) for f in fields)].append(p)
  return dict(groups)


def _test_accuracies(points: Sequence[dict[str, Any]]) -> list[float]:
  """The finished runs' test accuracies; a diverged run has none."""
  return [p['test_accuracy'] for p in _finished(points)]


def _finished(points: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """The points whose runs did not diverge."""
  return [p for p in points if p['test_accuracy'] is not None]


def mean_sd(values: Sequence[float], fmt: str = '.4f') -> str:
  """'mean ± sd (n=k)' of the seeds' values."""
  if not values:
    return '-'
  sd = statistics.stdev(values) if len(values) > 1 else 0.0
  return (f'{statistics.fmean(values):{fmt}} ± {sd:{fmt}} '
          f'(n={len(values)})')


def ratio_ci(numerator: Sequence[float], denominator: Sequence[float],
             seed: int = 0) -> tuple[float, float, float]:
  """mean(numerator) / mean(denominator), with a 95% percentile bootstrap
  interval: seeds resampled with replacement within each group."""
  rng = np.random.default_rng(seed)
  a, b = np.asarray(numerator, float), np.asarray(denominator, float)
  ia = rng.integers(0, len(a), (BOOTSTRAP, len(a)))
  ib = rng.integers(0, len(b), (BOOTSTRAP, len(b)))
  ratios = a[ia].mean(1) / b[ib].mean(1)
  low, high = np.percentile(ratios, [2.5, 97.5])
  return float(a.mean() / b.mean()), float(low), float(high)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
  """Two-sided p-value of Welch's t-test (unequal variances)."""
  return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


# --- Claim 1: ReLU converges faster ------------------------------------------


def convergence(points: Sequence[dict[str, Any]],
                config: ml_collections.ConfigDict, spec: dict[str, Any],
                out_dir: str) -> tuple[str, dict[str, Any]]:
  """Steps (and training seconds) until the training error falls below
  each of the spec's levels, per activation and BatchNorm setting; ratios
  to ReLU."""
  steps_per_epoch = (points[0]['summary']['num_train_examples']
                     // config.batch_size)
  budget = config.num_epochs * steps_per_epoch
  found = {p['folder']: marks.read(p, spec['levels'], steps_per_epoch)
           for p in points}
  windows = sorted({window for _, window in found.values()})
  if len(windows) > 1:
    raise marks.MarksError(f'the points\' training errors are means over '
                           f'{windows} steps, not one window')
  levels = [f'{l:g}' for l in spec['levels']]
  data = {'budget_steps': budget, 'window_steps': windows[0], 'groups': []}
  groups = _groups(points, ('model.batch_norm', 'model.activation'))
  for (bn, act), group in groups.items():
    entry = {'batch_norm': bn, 'activation': act, 'n': len(group),
             'diverged': len(group) - len(_finished(group)),
             'test_accuracy': _test_accuracies(group)}
    for level in levels:
      hit = [found[p['folder']][0][level] for p in group]
      entry[level] = {
          'steps': [h['step'] if h else None for h in hit],
          'train_time_s': [h['train_time_s'] if h else None for h in hit]}
    data['groups'].append(entry)
  table = _convergence_table(data, levels)
  _plot_convergence(data, levels, budget,
                    os.path.join(out_dir, 'convergence.png'))
  return table, data


def _convergence_table(data: dict[str, Any], levels: Sequence[str]) -> str:
  """Mean steps and seconds per group and level, with ratios to ReLU (in
  `data` too)."""
  budget, window = data['budget_steps'], data['window_steps']
  by_key = {(g['batch_norm'], g['activation']): g for g in data['groups']}
  header = ['BatchNorm', 'activation']
  for level in levels:
    pct = f'{float(level):.0%}'
    header += [f'steps to {pct}', 'x ReLU (95% CI)',
               f'seconds to {pct}', 'x ReLU (95% CI)']
  header.append('test accuracy')
  rows = []
  for (bn, act), g in by_key.items():
    relu = by_key.get((bn, 'relu'))
    row = ['on' if bn else 'off', act]
    for level in levels:
      for key in ('steps', 'train_time_s'):
        mine, theirs = g[level][key], relu[level][key] if relu else []
        reached = [v for v in mine if v is not None]
        cell = mean_sd(reached, '.0f' if key == 'steps' else '.1f')
        if len(reached) < len(mine):
          cell += f', {len(mine) - len(reached)} not within {budget} steps'
        first = sum(s == window for s in g[level]['steps'])
        if key == 'steps' and first:
          # Below the level at the first window: it got there sooner.
          cell += f', {first} at the first window'
        row.append(cell)
        if act == 'relu' or relu is None or None in theirs:
          ratio = '-'
        elif len(reached) == len(mine):
          r, low, high = ratio_ci(mine, theirs)
          ratio = f'{r:.2f} ({low:.2f}-{high:.2f})'
          g[level][f'{key}_ratio_to_relu'] = [r, low, high]
        elif key == 'steps':
          # Seeds that never got there count as the budget: a lower bound.
          r = np.mean([v or budget for v in mine]) / np.mean(theirs)
          ratio = f'>= {r:.2f}'
        else:
          ratio = '-'
        row.append(ratio)
    row.append(mean_sd(g['test_accuracy']) + (
        f', {g["diverged"]} diverged' if g['diverged'] else ''))
    rows.append(row)
  return _markdown(header, rows)


def _plot_convergence(data: dict[str, Any], levels: Sequence[str],
                      budget: int, path: str) -> None:
  plt = _pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharey=True)
  for ax, bn in zip(axes, (True, False)):
    groups = [g for g in data['groups'] if g['batch_norm'] == bn]
    for j, level in enumerate(levels):
      for i, g in enumerate(groups):
        steps = g[level]['steps']
        x = i + (j - (len(levels) - 1) / 2) * 0.25
        reached = [s for s in steps if s is not None]
        missed = len(steps) - len(reached)
        ax.scatter([x] * len(reached), reached, s=14, color=f'C{j}',
                   label=f'error < {float(level):.0%}' if i == 0 else None)
        if missed:
          ax.scatter([x], [budget], marker='^', s=40, color=f'C{j}',
                     edgecolors='black')
    ax.axhline(budget, color='grey', lw=0.8, ls=':')
    ax.set_xticks(range(len(groups)), [g['activation'] for g in groups])
    ax.set_yscale('log')
    ax.set_title(f'BatchNorm {"on" if bn else "off"}')
    ax.set_xlabel('activation')
  axes[0].set_ylabel('training steps (batch 100), one dot per seed')
  axes[0].legend(fontsize=8, loc='upper left')
  fig.suptitle(f'Steps until the training error (last {data["window_steps"]}'
               f' batches) falls '
               'below a level;\n^ = not within the budget (dotted line)',
               fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


# --- Claim 2: pooling gives translation invariance ---------------------------


def _invariance(point: dict[str, Any],
                test: Callable[[], dict[str, np.ndarray]]) -> dict[str, Any]:
  """The point's probe results: read from invariance.json, or measured on
  its best checkpoint and written there."""
  path = os.path.join(point['folder'], INVARIANCE_FILE)
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  trained, test = evaluate.load(point['folder']), test()
  result = {
      'shifts': list(SHIFTS), 'feature_shifts': list(FEATURE_SHIFTS),
      'checkpoint_epoch': trained.epoch,
      'accuracy': invariance.shifted_accuracy(trained, test['image'],
                                              test['label'], SHIFTS),
      'feature_change': invariance.feature_change(trained, test['image'],
                                                  FEATURE_SHIFTS)}
  records.write_json(path, result)
  return result


def translation(points: Sequence[dict[str, Any]],
                config: ml_collections.ConfigDict, spec: dict[str, Any],
                out_dir: str) -> tuple[str, dict[str, Any]]:
  """Accuracy on shifted test images and the features' relative change,
  per pooling; each seed's value is the mean over the four directions."""
  del spec
  # The test split is read only for points not probed yet.
  test = functools.cache(lambda: input_pipeline.load_splits(
      config.data)['test'])
  groups = _groups(points, ('model.pooling',))
  data = {'shifts': list(SHIFTS), 'feature_shifts': list(FEATURE_SHIFTS),
          'groups': []}
  for (pool,), group in groups.items():
    # A diverged run's weights are not a trained model: left out, counted.
    ok = _finished(group)
    probes = [_invariance(p, test) for p in ok]
    mean4 = lambda d: np.mean(list(d.values()), axis=0).tolist()
    data['groups'].append({
        'pooling': pool, 'n': len(ok), 'diverged': len(group) - len(ok),
        'pools': group[0]['summary']['config']['model']['pool_window'] > 1,
        'test_accuracy': _test_accuracies(group),
        'accuracy': [mean4(r['accuracy']) for r in probes],
        'feature_change': [mean4(r['feature_change']) for r in probes]})
  # The model without pooling, the others' baseline.
  base = next((g for g in data['groups'] if not g['pools']), None)
  shown = (0, 1, 2, 4, 6)
  header = (['pooling'] + [f'accuracy, shift {d}' for d in shown]
            + [f'feature change, {d} px' for d in FEATURE_SHIFTS]
            + ([f'vs {base["pooling"]}: change at 1 px (Welch p)',
                'accuracy at 2 px (Welch p)'] if base else []))
  rows = []
  for g in data['groups']:
    acc = np.asarray(g['accuracy'])
    change = np.asarray(g['feature_change'])
    row = [g['pooling']] + [mean_sd(acc[:, d].tolist()) for d in shown]
    row += [mean_sd(change[:, i].tolist(), '.3f')
            for i in range(len(FEATURE_SHIFTS))]
    if base:
      if g is base:
        row += ['-', '-']
      else:
        b_change = np.asarray(base['feature_change'])[:, 0]
        b_acc = np.asarray(base['accuracy'])[:, 2]
        d1 = change[:, 0].mean() - b_change.mean()
        d2 = acc[:, 2].mean() - b_acc.mean()
        p1, p2 = welch_p(change[:, 0], b_change), welch_p(acc[:, 2], b_acc)
        g['vs_baseline'] = {'feature_change_1px': [float(d1), p1],
                            'accuracy_2px': [float(d2), p2]}
        row += [f'{d1:+.3f} (p={p1:.2g})', f'{d2:+.4f} (p={p2:.2g})']
    rows.append(row)
  _plot_translation(data, os.path.join(out_dir, 'translation.png'))
  return _markdown(header, rows), data


def _plot_translation(data: dict[str, Any], path: str) -> None:
  plt = _pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.8))
  for i, g in enumerate(data['groups']):
    acc = np.asarray(g['accuracy'])
    axes[0].errorbar(data['shifts'], acc.mean(0), yerr=acc.std(0, ddof=1),
                     marker='o', ms=3, capsize=2, label=g['pooling'],
                     color=f'C{i}')
    change = np.asarray(g['feature_change'])
    axes[1].errorbar(np.asarray(data['feature_shifts']) + (i - 1.5) * 0.05,
                     change.mean(0), yerr=change.std(0, ddof=1), marker='o',
                     ms=3, capsize=2, label=g['pooling'], color=f'C{i}')
  axes[0].set_xlabel('shift of the test images (pixels, zero fill)')
  axes[0].set_ylabel('test accuracy (mean of 4 directions)')
  axes[0].legend(fontsize=8, title='pooling', title_fontsize=8)
  axes[1].set_xticks(data['feature_shifts'])
  axes[1].set_xlabel('shift (pixels)')
  axes[1].set_ylabel('|f(shifted) - f| / |f|, penultimate features')
  axes[1].legend(fontsize=8, title='pooling', title_fontsize=8)
  fig.suptitle('Mean ± sd over seeds', fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


# --- Claim 3: BatchNorm against bad initialisation ---------------------------


def _first_epoch_loss(point: dict[str, Any]) -> float:
  summary = point['summary']
  if summary.get('status') == 'diverged' and summary['diverged_epoch'] == 1:
    return float(summary['diverged_train_loss'])
  return point['history'][0]['train_loss']


def init_scale(points: Sequence[dict[str, Any]],
               config: ml_collections.ConfigDict, spec: dict[str, Any],
               out_dir: str) -> tuple[str, dict[str, Any]]:
  """Test accuracy, divergence and first-epoch loss per initial scale, with
  and without BatchNorm, and per set of scaled kernels (all, conv, dense)."""
  del config, spec
  fields = ('model.batch_norm', 'model.kernel_init_layers',
            'model.kernel_init_scale')
  groups = _groups(points, fields)
  data = {'groups': []}
  rows = []
  for (bn, scaled, scale), group in sorted(groups.items(), key=lambda kv: (
      not kv[0][0], kv[0][1], kv[0][2])):
    ok = _finished(group)
    entry = {'batch_norm': bn, 'kernel_init_layers': scaled,
             'kernel_init_scale': scale, 'n': len(group),
             'diverged': len(group) - len(ok),
             'test_accuracy': _test_accuracies(ok),
             'first_epoch_loss': [_first_epoch_loss(p) for p in group]}
    data['groups'].append(entry)
    losses = [l for l in entry['first_epoch_loss'] if np.isfinite(l)]
    rows.append(['on' if bn else 'off', scaled, f'x{scale:g}',
                 f'{entry["diverged"]} of {len(group)}',
                 mean_sd(entry['test_accuracy']),
                 mean_sd(losses, '.3g') + (
                     f', {len(group) - len(losses)} not finite'
                     if len(losses) < len(group) else '')])
  header = ['BatchNorm', 'scaled kernels', 'kernel init', 'diverged',
            'test accuracy', 'training loss, epoch 1']
  _plot_init_scale(data, os.path.join(out_dir, 'init_scale.png'))
  return _markdown(header, rows), data


def _plot_init_scale(data: dict[str, Any], path: str) -> None:
  plt = _pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
  finite = lambda xs: [x for x in xs if np.isfinite(x)]
  mean = lambda xs: np.mean(xs) if xs else np.nan
  lines = sorted({(g['batch_norm'], g['kernel_init_layers'])
                  for g in data['groups']}, key=lambda k: (not k[0], k[1]))
  # Colour: BatchNorm on or off; line style: which kernels are scaled.
  styles = {'all': '-', 'conv': '--', 'dense': ':'}
  for bn, scaled in lines:
    color = 'C0' if bn else 'C1'
    groups = [g for g in data['groups']
              if (g['batch_norm'], g['kernel_init_layers']) == (bn, scaled)]
    for g in groups:
      losses = finite(g['first_epoch_loss'])
      axes[0].scatter([g['kernel_init_scale']] * len(g['test_accuracy']),
                      g['test_accuracy'], s=14, color=color)
      axes[1].scatter([g['kernel_init_scale']] * len(losses), losses, s=14,
                      color=color)
    scales = [g['kernel_init_scale'] for g in groups]
    label = f'BatchNorm {"on" if bn else "off"}, {scaled} kernels scaled'
    axes[0].plot(scales, [mean(g['test_accuracy']) for g in groups],
                 color=color, ls=styles[scaled], label=label)
    axes[1].plot(scales, [mean(finite(g['first_epoch_loss']))
                          for g in groups], color=color, ls=styles[scaled],
                 label=label)
  for ax in axes:
    ax.set_xscale('log')
    ax.set_xlabel('initial kernel scale (x LeCun normal)')
    ax.legend(fontsize=7)
  axes[0].set_ylabel('test accuracy (dots: seeds; diverged: none)')
  axes[1].set_ylabel('mean training loss, epoch 1')
  if any(finite(g['first_epoch_loss']) for g in data['groups']):
    axes[1].set_yscale('log')
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '|'.join('---' for _ in header) + '|']
  lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
  return '\n'.join(lines) + '\n'


# Which analysis a claim's sweep spec names under 'analysis'.
ANALYSES: dict[str, Callable[..., tuple[str, dict[str, Any]]]] = {
    'convergence': convergence,
    'translation': translation,
    'init_scale': init_scale,
}
