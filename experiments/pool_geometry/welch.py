"""The Welch tests for the 3x3-pooling table.

  python experiments/pool_geometry/welch.py

Two-sided Welch t-tests over the 3 seeds' test accuracies, read from the
committed summary.json files; uncorrected for multiple comparisons. Within
the 3x3 table: Gaussian against average pooling (they differ only in these
windows) and max against average, per activation. Across geometries: each
3x3 cell against the same cell of the 2x2 table
(experiments/activation_pooling/runs, trained on an H200, so
device differences are part of that gap); and, for the one cell where that
gap was largest, sigmoid with average pooling, against the same cell at 2x2
trained on this CPU at the 3x3 table's commit (cpu_2x2/), and that
control against the H200's cell. A comparison whose cells lack points says
how many it has.
"""

import glob
import json
import os

import numpy as np
from scipy import stats

HERE = os.path.dirname(os.path.abspath(__file__))
TABLES = {'3x3': os.path.join(HERE, 'runs'),
          '2x2': os.path.join(HERE, '..', 'activation_pooling', 'runs'),
          # The same-device control: one 2x2 cell on this CPU, same commit.
          '2x2cpu': os.path.join(HERE, 'cpu_2x2')}


def accuracies(table: str, activation: str, pooling: str) -> np.ndarray:
  pattern = os.path.join(TABLES[table], f'activation={activation},'
                         f'pooling={pooling},seed=*', 'summary.json')
  return np.array([json.load(open(p))['test_accuracy']
                   for p in sorted(glob.glob(pattern))])


def compare(a: tuple, b: tuple) -> None:
  x, y = accuracies(*a), accuracies(*b)
  name = lambda c: f'{c[0]:6s} {c[1]:7s} {c[2]:8s}'
  if len(x) < 3 or len(y) < 3:
    print(f'{name(a)} - {name(b)}  n/a ({len(x)} and {len(y)} of 3 points)')
    return
  p = stats.ttest_ind(x, y, equal_var=False).pvalue
  print(f'{name(a)} - {name(b)}  {x.mean() - y.mean():+.4f}  p = {p:.2g}')


for act in ('relu', 'tanh', 'sigmoid'):
  compare(('3x3', act, 'gaussian'), ('3x3', act, 'avg'))
  compare(('3x3', act, 'max'), ('3x3', act, 'avg'))
for act in ('relu', 'tanh', 'sigmoid'):
  for pool in ('max', 'avg', 'l2', 'gaussian'):
    compare(('3x3', act, pool), ('2x2', act, pool))
compare(('3x3', 'sigmoid', 'avg'), ('2x2cpu', 'sigmoid', 'avg'))
compare(('2x2cpu', 'sigmoid', 'avg'), ('2x2', 'sigmoid', 'avg'))
