"""Turns a sweep folder into its ablation table and figures.

  python -m cnn_jax.report --workdir=DIR [--format=markdown|latex|csv]

Reads only what the runs wrote (DIR/sweep.json and each point's summary.json,
metrics.jsonl and config); a point that failed or has not finished shows as
such, never as a number. Writes table.{md,tex,csv}, heatmap.png and
learning_curves.png into DIR's parent folder and prints the table.
"""

import collections
import json
import math
import os
import statistics
from typing import Any

from absl import app
from absl import flags

from cnn_jax import cli

FLAGS = flags.FLAGS


def _get(config: dict[str, Any], field: str) -> Any:
  for part in field.split('.'):
    config = config[part]
  return config


def _read_json_lines(path: str) -> list[dict[str, Any]]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def collect(workdir: str) -> dict[str, Any]:
  """Cells of the table: {(row, col): {'values', 'missing', 'failed', 'curves'}}."""
  with open(os.path.join(workdir, 'sweep.json')) as f:
    sweep = json.load(f)
  rows = list(dict.fromkeys(sweep['axes'][sweep['rows']]))
  cols = list(dict.fromkeys(sweep['axes'][sweep['cols']]))
  cells = collections.defaultdict(
      lambda: {'values': [], 'missing': 0, 'failed': 0, 'curves': []})
  for point in sweep['points']:
    point_dir = os.path.join(workdir, point['name'])
    key = (point['values'][sweep['rows']], point['values'][sweep['cols']])
    summary_path = os.path.join(point_dir, 'summary.json')
    if os.path.exists(summary_path):
      with open(summary_path) as f:
        summary = json.load(f)
      # The run's own config is the truth about what it ran.
      key = (_get(summary['config'], sweep['rows']),
             _get(summary['config'], sweep['cols']))
      cells[key]['values'].append(summary[sweep['metric']])
      cells[key]['epochs'] = summary['epochs_completed']
      cells[key]['curves'].append(
          [r['val_accuracy'] for r in
           _read_json_lines(os.path.join(point_dir, 'metrics.jsonl'))])
    elif os.path.exists(os.path.join(point_dir, 'error.txt')):
      cells[key]['failed'] += 1
    else:
      cells[key]['missing'] += 1
  return {'sweep': sweep, 'rows': rows, 'cols': cols, 'cells': cells}


def _cell_text(cell: dict[str, Any], best: bool, fmt: str) -> str:
  """'mean ± std (n=k)', the best marked; failed and missing runs named."""
  values = cell['values']
  parts = []
  if values:
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
  if cell['failed']:
    parts.append(f'{cell["failed"]} failed')
  if cell['missing']:
    parts.append(f'{cell["missing"]} missing')
  return '; '.join(parts) or 'missing'


def table(data: dict[str, Any], fmt: str) -> str:
  """The rows x cols table of mean ± std over seeds, the best mean marked."""
  sweep, cells = data['sweep'], data['cells']
  means = {k: statistics.fmean(c['values']) for k, c in cells.items()
           if c['values']}
  best = max(means, key=means.get) if means else None
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


def figures(data: dict[str, Any], out_dir: str) -> None:
  """heatmap.png of the cell means and learning_curves.png of validation."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import matplotlib.ticker  # pylint: disable=g-import-not-at-top

  sweep, cells = data['sweep'], data['cells']
  grid = [[statistics.fmean(cells[(r, c)]['values'])
           if cells[(r, c)]['values'] else math.nan for c in data['cols']]
          for r in data['rows']]
  fig, ax = plt.subplots(figsize=(1.6 * len(data['cols']) + 2,
                                  0.8 * len(data['rows']) + 1.5))
  image = ax.imshow(grid, cmap='viridis')
  ax.set_xticks(range(len(data['cols'])), [str(c) for c in data['cols']])
  ax.set_yticks(range(len(data['rows'])), [str(r) for r in data['rows']])
  ax.set_xlabel(sweep['cols'])
  ax.set_ylabel(sweep['rows'])
  low, high = image.get_clim()
  for i, row in enumerate(grid):
    for j, value in enumerate(row):
      # Dark text on the light (high) end of viridis, light on the dark end.
      light = not math.isnan(value) and value > (low + high) / 2
      ax.text(j, i, 'missing' if math.isnan(value) else f'{value:.4f}',
              ha='center', va='center', color='k' if light else 'w')
  fig.colorbar(image, ax=ax, label=f'mean {sweep["metric"]}')
  fig.tight_layout()
  fig.savefig(os.path.join(out_dir, 'heatmap.png'), dpi=120)
  plt.close(fig)

  fig, ax = plt.subplots(figsize=(7, 4.5))
  # Colour names the column, line style the row, so no two cells look alike.
  styles = ['-', '--', ':', '-.']
  for i, r in enumerate(data['rows']):
    for j, c in enumerate(data['cols']):
      curves = [cv for cv in cells[(r, c)]['curves'] if cv]
      if not curves:
        continue
      length = min(len(cv) for cv in curves)
      mean = [statistics.fmean(cv[e] for cv in curves) for e in range(length)]
      ax.plot(range(1, length + 1), mean, color=f'C{j % 10}',
              linestyle=styles[i % len(styles)], label=f'{r} / {c}')
  ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
  ax.set_xlabel('epoch')
  ax.set_ylabel('validation accuracy (mean over seeds)')
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  fig.savefig(os.path.join(out_dir, 'learning_curves.png'), dpi=120)
  plt.close(fig)


def write_report(workdir: str) -> dict[str, str]:
  """Writes the tables in three formats and the figures; returns the tables."""
  data = collect(workdir)
  out_dir = os.path.dirname(os.path.abspath(workdir))
  tables = {fmt: table(data, fmt) for fmt in ('markdown', 'latex', 'csv')}
  for fmt, ext in (('markdown', 'md'), ('latex', 'tex'), ('csv', 'csv')):
    with open(os.path.join(out_dir, f'table.{ext}'), 'w') as f:
      f.write(tables[fmt])
  figures(data, out_dir)
  return tables


def main(argv: list[str]) -> None:
  del argv
  if not os.path.exists(os.path.join(FLAGS.workdir, 'sweep.json')):
    cli.fail(f'--workdir must be a sweep folder holding sweep.json; got '
             f'{FLAGS.workdir!r}')
  print(write_report(FLAGS.workdir)[FLAGS.format], end='')


if __name__ == '__main__':
  cli.define_flags(config=False, distributed=False)
  flags.DEFINE_enum('format', 'markdown', ['markdown', 'latex', 'csv'],
                    'Table format printed (all three are written).')
  app.run(main, flags_parser=cli.parse_flags)
