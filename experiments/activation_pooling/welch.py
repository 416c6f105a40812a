"""Welch tests between cells of the 20-epoch activation x pooling and
BatchNorm tables (experiments/activation_pooling, experiments/batch_norm).

  python experiments/activation_pooling/welch.py

Two-sided Welch t-tests over the 3 seeds' test accuracies of two cells, read
from the committed summary.json files; uncorrected for multiple comparisons.
"""

import glob
import json
import os

import numpy as np
from scipy import stats

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')


def accuracies(sweep: str, point: str) -> np.ndarray:
  paths = sorted(glob.glob(os.path.join(HERE, sweep, 'runs',
                                        point + ',seed=*', 'summary.json')))
  assert len(paths) == 3, (sweep, point, paths)
  return np.array([json.load(open(p))['test_accuracy'] for p in paths])


def compare(sweep: str, a: str, b: str) -> None:
  x, y = accuracies(sweep, a), accuracies(sweep, b)
  p = stats.ttest_ind(x, y, equal_var=False).pvalue
  print(f'{a:40s} - {b:40s} {x.mean() - y.mean():+.4f}  p = {p:.3f}')


# (activation, pooling) cells of the activation x pooling table.
PAIRS = [(('tanh', 'l2'), ('relu', 'l2')), (('tanh', 'l2'), ('relu', 'max')),
         (('tanh', 'l2'), ('tanh', 'max')), (('relu', 'max'), ('relu', 'avg')),
         (('sigmoid', 'max'), ('sigmoid', 'avg')),
         (('sigmoid', 'max'), ('relu', 'max'))]

for a, b in PAIRS:
  compare('activation_pooling', f'activation={a[0]},pooling={a[1]}',
          f'activation={b[0]},pooling={b[1]}')
for act in ('sigmoid', 'tanh', 'relu'):
  compare('batch_norm', f'batch_norm=True,activation={act}',
          f'batch_norm=False,activation={act}')
