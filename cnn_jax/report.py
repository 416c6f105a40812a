"""Turns a sweep folder into its ablation table and figures.

  python -m cnn_jax.report --workdir=DIR [--format=markdown|latex|csv]

Reads only what the runs wrote (DIR/sweep.json and each point's summary.json,
metrics.jsonl and config); a point that failed, diverged, has not finished or
whose files are unreadable shows as such, never as a number, and a run is
counted once, however many points sweep.json lists for its folder. Writes
table.{md,tex,csv}, heatmap.png and learning_curves.png into DIR's parent
folder, all of them only once everything is read, and prints the table.

A bad sweep.json is a `ReportError` (one `error:` line); a bad file of one
point is a `warning:` line and that point counts as unreadable.
"""

import collections
import json
import math
import os
import statistics
import sys
from typing import Any

from absl import flags

from cnn_jax import cli
from cnn_jax import errors
from cnn_jax import records

FLAGS = flags.FLAGS

# The summary.json numbers a table can show; the sweep launcher checks a
# spec's metric against these before any point runs.
METRICS = ('test_accuracy', 'test_loss', 'best_val_accuracy',
           'final_val_accuracy', 'train_images_per_sec', 'wall_time_s')
# Metrics whose best cell is the smallest mean, not the largest.
LOWER_IS_BETTER = ('test_loss', 'wall_time_s')
_SWEEP_FIELDS = ('axes', 'rows', 'cols', 'metric', 'points')
_OUTPUTS = ('table.md', 'table.tex', 'table.csv', 'heatmap.png',
            'learning_curves.png')


class ReportError(errors.UserError):
  """A sweep folder the report cannot tabulate: a bad sweep.json, no points."""


class _Unreadable(Exception):
  """One file is empty, corrupt or lacks a field; the message says which."""


def config_field(config: dict[str, Any], field: str) -> Any:
  """config['model']['pooling'] for the field 'model.pooling'."""
  for part in field.split('.'):
    config = config[part]
  return config


def _read_text(path: str) -> str:
  try:
    with open(path, encoding='utf-8') as f:
      text = f.read()
  except UnicodeDecodeError:
    raise _Unreadable('not UTF-8 text') from None
  except OSError as e:
    raise _Unreadable(f'cannot be read: {e.strerror or e}') from None
  if not text.strip():
    raise _Unreadable('empty')
  return text


def _parse_json(text: str, line: int | None = None) -> Any:
  """The JSON of `text`, the whole file's or that of its line `line`."""
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    # e.msg may end in ' at' ('Unterminated string starting at').
    msg = e.msg.removesuffix(' at')
    where = (f'line {line} is not valid JSON: {msg} at column {e.colno}'
             if line else
             f'not valid JSON: {msg} at line {e.lineno} column {e.colno}')
    raise _Unreadable(where) from None


def _is_number(x: Any) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def _names(values: Any) -> str:
  return ', '.join(str(v) for v in values)


def read_sweep(workdir: str) -> dict[str, Any]:
  """DIR/sweep.json, checked, or a ReportError naming the file and the fault.

  Checked up front so that a bad spec is one error line, not a KeyError deep
  in the table code, and nothing is written.
  """
  path = os.path.join(workdir, records.SWEEP_FILE)
  if not os.path.isfile(path):
    raise ReportError(f'{path} does not exist; --workdir must be a sweep '
                      f'folder holding {records.SWEEP_FILE}')
  try:
    sweep = _parse_json(_read_text(path))
  except _Unreadable as e:
    raise ReportError(f'{path} is unreadable ({e})') from None
  if not isinstance(sweep, dict):
    raise ReportError(f'{path} is not a JSON object')
  lacking = [k for k in _SWEEP_FIELDS if k not in sweep]
  if lacking:
    raise ReportError(f'{path} lacks {_names(lacking)}')
  axes = sweep['axes']
  if not isinstance(axes, dict) or not all(
      isinstance(v, list) for v in axes.values()):
    raise ReportError(f'{path}: axes is not a mapping of field to a list of '
                      f'values')
  for key in ('rows', 'cols'):
    if not isinstance(sweep[key], str) or sweep[key] not in axes:
      raise ReportError(f'{path}: {key} is {sweep[key]}, which is no axis; '
                        f'the axes are {_names(axes) or "none"}')
    if any(isinstance(v, (list, dict)) for v in axes[sweep[key]]):
      raise ReportError(f'{path}: axis {sweep[key]} has lists or mappings '
                        f'among its values; {key} needs plain values')
  if sweep['metric'] not in METRICS:
    raise ReportError(f'{path}: metric is {sweep["metric"]}, which is no '
                      f'summary metric; the metrics are {_names(METRICS)}')
  if not isinstance(sweep['points'], list):
    raise ReportError(f'{path}: points is not a list')
  if not sweep['points']:
    raise ReportError(f'{path} lists no points; there is nothing to report')
  fields = (sweep['rows'], sweep['cols'])
  for i, point in enumerate(sweep['points']):
    values = point.get('values') if isinstance(point, dict) else None
    if (not isinstance(point, dict) or not isinstance(point.get('name'), str)
        or not isinstance(values, dict)
        or any(f not in values or isinstance(values[f], (list, dict))
               for f in fields)):
      raise ReportError(f'{path}: point {i} lacks a name or plain values for '
                        f'{_names(fields)}')
    if not isinstance(point.get('overrides', {}), dict):
      raise ReportError(f'{path}: point {i} has overrides that are not a '
                        f'mapping of field to value')
    # A point's name is its folder: one name, read inside the sweep folder.
    folder = point['name']
    if folder in ('', '.', '..') or os.sep in folder or '\0' in folder:
      raise ReportError(f'{path}: point {i} names the folder '
                        f'{folder or "(empty)"}, '
                        f'which is not one folder inside {workdir}')
  return sweep


def _cell_of(config: Any, point: dict[str, Any],
             sweep: dict[str, Any]) -> tuple[Any, Any]:
  """The (row, col) of the run, judged by its own config: the truth about
  what it ran.

  A point listed with the fields it sets goes to its own cell if its config
  has them all: that way a variant (several fields under one name) finds its
  row. An older listing names only the values, which the config's rows and
  cols fields must hold.
  """
  if 'overrides' in point:
    for field, want in point['overrides'].items():
      try:
        have = config_field(config, field)
      except (KeyError, TypeError):
        raise _Unreadable(f'its config lacks {field}') from None
      if have != want:
        raise _Unreadable(f'its config has {field}={have}, not {want} as '
                          f'{records.SWEEP_FILE} sets')
    return point['values'][sweep['rows']], point['values'][sweep['cols']]
  try:
    return tuple(config_field(config, sweep[k]) for k in ('rows', 'cols'))
  except (KeyError, TypeError):
    raise _Unreadable(f'its config lacks {sweep["rows"]} or '
                      f'{sweep["cols"]}') from None


def _read_summary(path: str, point: dict[str, Any], sweep: dict[str, Any]
                  ) -> tuple[tuple[Any, Any], float | None]:
  """((row, col) of the run, metric value or None if diverged).

  A run that diverged has no metric; so does an old one whose metric went
  non-finite (written before summaries carried a status).
  """
  summary = _parse_json(_read_text(path))
  try:
    value = records.metric_value(summary, sweep['metric'])
  except records.SummaryError as e:
    raise _Unreadable(e) from None
  if not isinstance(summary.get('config'), dict):
    raise _Unreadable('lacks its config')
  return _cell_of(summary['config'], point, sweep), value


def _read_curve(path: str) -> list[float]:
  """The validation accuracy of each epoch in metrics.jsonl."""
  curve = []
  for i, line in enumerate(_read_text(path).splitlines(), 1):
    if not line.strip():
      continue
    record = _parse_json(line, i)
    if not isinstance(record, dict) or not _is_number(
        record.get('val_accuracy')):
      raise _Unreadable(f'line {i} lacks val_accuracy')
    curve.append(record['val_accuracy'])
  return curve


def _warn(path: str, reason: Any, consequence: str) -> None:
  print(f'warning: {path} is unreadable ({reason}); {consequence}',
        file=sys.stderr)


def collect(workdir: str) -> dict[str, Any]:
  """Reads the sweep: {'sweep', 'rows', 'cols', 'cells'}.

  cells maps (row, col) to {'values', 'points', 'missing', 'failed',
  'unreadable', 'diverged', 'curves'}. A point's bad file is a warning on
  stderr, not an error, so one corrupt run does not hide the rest.
  """
  sweep = read_sweep(workdir)
  rows = list(dict.fromkeys(sweep['axes'][sweep['rows']]))
  cols = list(dict.fromkeys(sweep['axes'][sweep['cols']]))
  cells = collections.defaultdict(
      lambda: {'values': [], 'points': 0, 'missing': 0, 'failed': 0,
               'unreadable': 0, 'diverged': 0, 'curves': []})
  listed = collections.Counter(p['name'] for p in sweep['points'])
  for folder, count in listed.items():
    if count > 1:  # Written before such sweeps were refused.
      print(f'warning: {os.path.join(workdir, records.SWEEP_FILE)} lists the '
            f'folder {folder} for {count} points; its run is counted once',
            file=sys.stderr)
  read = set()
  for point in sweep['points']:
    if point['name'] in read:
      continue
    read.add(point['name'])
    point_dir = os.path.join(workdir, point['name'])
    key = (point['values'][sweep['rows']], point['values'][sweep['cols']])
    summary_path = os.path.join(point_dir, records.SUMMARY_FILE)
    metrics_path = os.path.join(point_dir, records.METRICS_FILE)
    if os.path.exists(summary_path):
      try:
        run_key, value = _read_summary(summary_path, point, sweep)
        if run_key[0] not in rows or run_key[1] not in cols:
          raise _Unreadable(f'its config has {sweep["rows"]}={run_key[0]}, '
                            f'{sweep["cols"]}={run_key[1]}, not in '
                            f'{records.SWEEP_FILE}')
      except _Unreadable as e:
        _warn(summary_path, e, 'point counted as unreadable')
        cells[key]['points'] += 1
        cells[key]['unreadable'] += 1
        continue
      cell = cells[run_key]
      cell['points'] += 1
      if value is None:
        cell['diverged'] += 1
        continue
      cell['values'].append(value)
      if os.path.exists(metrics_path):
        try:
          cell['curves'].append(_read_curve(metrics_path))
        except _Unreadable as e:
          _warn(metrics_path, e, 'its learning curve is left out')
    else:
      cells[key]['points'] += 1
      if os.path.exists(os.path.join(point_dir, records.FAILED_FILE)):
        cells[key]['failed'] += 1
      else:
        cells[key]['missing'] += 1
  return {'sweep': sweep, 'rows': rows, 'cols': cols, 'cells': cells}


def _cell_text(cell: dict[str, Any], best: bool, fmt: str) -> str:
  """'mean ± std (n=k)', the best marked; other runs named by what they are.

  A cell with a diverged seed shows no number at all: the mean of the seeds
  that survived would flatter the setting.
  """
  values = cell['values']
  parts = []
  if cell['diverged']:
    parts.append(f'diverged ({cell["diverged"]} of {cell["points"]})')
  elif values:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    if fmt == 'latex':
      number = f'{mean:.4f} \\pm {std:.4f}'
      number = f'$\\mathbf{{{number}}}$' if best else f'${number}$'
      text = f'{number} (n={len(values)})'
    else:
      text = f'{mean:.4f} ± {std:.4f} (n={len(values)})'
      if best:
        text = f'**{text}**' if fmt == 'markdown' else f'{text} best'
    parts.append(text)
  for kind in ('failed', 'unreadable', 'missing'):
    if cell[kind]:
      parts.append(f'{cell[kind]} {kind}')
  return '; '.join(parts) or 'missing'


def _mean(cell: dict[str, Any]) -> float:
  """The cell's mean, NaN where it shows no number (none, or a divergence)."""
  if cell['diverged'] or not cell['values']:
    return math.nan
  return statistics.fmean(cell['values'])


def table(data: dict[str, Any], fmt: str) -> str:
  """The rows x cols table of mean ± std over seeds, the best mean marked."""
  sweep, cells = data['sweep'], data['cells']
  means = {k: _mean(cells[k]) for k in list(cells)}
  means = {k: m for k, m in means.items() if not math.isnan(m)}
  pick = min if sweep['metric'] in LOWER_IS_BETTER else max
  best = pick(means, key=means.get) if means else None
  header = [f'{sweep["rows"]} / {sweep["cols"]}'] + [str(c) for c in
                                                      data['cols']]
  body = [[str(r)] + [_cell_text(cells[(r, c)], (r, c) == best, fmt)
                      for c in data['cols']] for r in data['rows']]
  if fmt == 'csv':
    lines = [header] + body
    return '\n'.join(','.join(f'"{x}"' for x in line) for line in lines) + '\n'
  if fmt == 'latex':
    escape = lambda x: x.replace('_', '\\_')
    out = [f'\\begin{{tabular}}{{l{"c" * len(data["cols"])}}}', '\\hline',
           ' & '.join(map(escape, header)) + ' \\\\', '\\hline']
    out += [' & '.join([escape(line[0])] + line[1:]) + ' \\\\'
            for line in body]
    out += ['\\hline', '\\end{tabular}']
    return '\n'.join(out) + '\n'
  out = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  out += ['| ' + ' | '.join(line) + ' |' for line in body]
  return '\n'.join(out) + '\n'


def _blank_label(cell: dict[str, Any]) -> str:
  """What a heat-map cell without a number says instead."""
  for kind in ('diverged', 'failed', 'unreadable'):
    if cell[kind]:
      return kind
  return 'missing'


def figures(data: dict[str, Any], out_dir: str, suffix: str = '') -> None:
  """heatmap.png of the cell means and learning_curves.png of validation.

  Args:
    data: what `collect` returned.
    out_dir: the folder the two figures go into.
    suffix: appended to each file name (PNG whatever the name), so that
      `write_report` can render them beside the final names and rename.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import matplotlib.ticker  # pylint: disable=g-import-not-at-top

  sweep, cells = data['sweep'], data['cells']
  grid = [[_mean(cells[(r, c)]) for c in data['cols']] for r in data['rows']]
  fig, ax = plt.subplots(figsize=(1.6 * len(data['cols']) + 2,
                                  0.8 * len(data['rows']) + 1.5))
  image = ax.imshow(grid, cmap='viridis')  # NaN cells stay blank.
  ax.set_xticks(range(len(data['cols'])), [str(c) for c in data['cols']])
  ax.set_yticks(range(len(data['rows'])), [str(r) for r in data['rows']])
  ax.set_xlabel(sweep['cols'])
  ax.set_ylabel(sweep['rows'])
  low, high = image.get_clim()
  for i, row in enumerate(grid):
    for j, value in enumerate(row):
      blank = math.isnan(value)
      # Dark text on blank cells and on the light (high) end of viridis,
      # light text on its dark end.
      dark = blank or value > (low + high) / 2
      text = (_blank_label(cells[(data['rows'][i], data['cols'][j])])
              if blank else f'{value:.4f}')
      ax.text(j, i, text, ha='center', va='center', color='k' if dark else 'w')
  fig.colorbar(image, ax=ax, label=f'mean {sweep["metric"]}')
  fig.tight_layout()
  fig.savefig(os.path.join(out_dir, 'heatmap.png' + suffix), dpi=120,
              format='png')
  plt.close(fig)

  fig, ax = plt.subplots(figsize=(7, 4.5))
  # Colour names the column, line style the row, so no two cells look alike.
  styles = ['-', '--', ':', '-.']
  plotted = False
  for i, r in enumerate(data['rows']):
    for j, c in enumerate(data['cols']):
      cell = cells[(r, c)]
      curves = [cv for cv in cell['curves'] if cv]
      # No survivors' mean for a cell with a diverged seed, as in the table.
      if not curves or cell['diverged']:
        continue
      length = min(len(cv) for cv in curves)
      mean = [statistics.fmean(cv[e] for cv in curves) for e in range(length)]
      ax.plot(range(1, length + 1), mean, color=f'C{j % 10}',
              linestyle=styles[i % len(styles)], label=f'{r} / {c}')
      plotted = True
  ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
  ax.set_xlabel('epoch')
  ax.set_ylabel('validation accuracy (mean over seeds)')
  if plotted:  # A legend of nothing is a matplotlib warning.
    ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  fig.savefig(os.path.join(out_dir, 'learning_curves.png' + suffix), dpi=120,
              format='png')
  plt.close(fig)


def write_report(workdir: str) -> dict[str, str]:
  """Writes the tables in three formats and the figures; returns the tables.

  Everything is read and rendered to .tmp files first and renamed at the
  end, so a bad sweep or a failure on the way leaves no output half-written.
  """
  workdir = os.path.expanduser(workdir)
  data = collect(workdir)
  out_dir = os.path.dirname(os.path.abspath(workdir))
  tables = {fmt: table(data, fmt) for fmt in ('markdown', 'latex', 'csv')}
  paths = [os.path.join(out_dir, name) for name in _OUTPUTS]
  try:
    for fmt, path in zip(('markdown', 'latex', 'csv'), paths):
      with open(path + '.tmp', 'w', encoding='utf-8') as f:
        f.write(tables[fmt])
    figures(data, out_dir, suffix='.tmp')
    for path in paths:
      os.replace(path + '.tmp', path)
  except OSError as e:
    raise ReportError(f'cannot write the report into {out_dir} '
                      f'({e.strerror or e})') from None
  finally:
    for path in paths:
      if os.path.exists(path + '.tmp'):
        os.remove(path + '.tmp')
  return tables


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])}')
  try:
    tables = write_report(os.path.expanduser(FLAGS.workdir))
  except errors.UserError as e:
    cli.fail(str(e))
  print(tables[FLAGS.format], end='')


if __name__ == '__main__':
  cli.define_flags(config=False, distributed=False)
  flags.DEFINE_enum('format', 'markdown', ['markdown', 'latex', 'csv'],
                    'Table format printed (all three are written).')
  cli.run(main)
