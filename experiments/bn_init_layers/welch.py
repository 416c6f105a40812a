"""The costs and Welch tests experiments/bn_init_layers/README.md quotes.

  python experiments/bn_init_layers/welch.py

Two-sided Welch t-tests over the 3 seeds' test accuracies of two groups, read
from the committed results.json of this claim and of experiments/bn_init
(whose 'all' rows scale every kernel, with the same recipe and seeds);
uncorrected for multiple comparisons. First, each group's cost: its mean
test accuracy below that of the same BatchNorm setting with every kernel at
x1.
"""

import json
import os

import numpy as np
from scipy import stats

HERE = os.path.dirname(os.path.abspath(__file__))


def groups(claim: str) -> dict[tuple, list[float]]:
  with open(os.path.join(HERE, '..', claim, 'results.json')) as f:
    return {(g['batch_norm'], g['kernel_init_layers'],
             g['kernel_init_scale']): g['test_accuracy']
            for g in json.load(f)['groups']}


ACC = {**groups('bn_init'), **groups('bn_init_layers')}


def compare(a: tuple, b: tuple) -> None:
  x, y = np.array(ACC[a]), np.array(ACC[b])
  assert len(x) == len(y) == 3, (a, b)
  p = stats.ttest_ind(x, y, equal_var=False).pvalue
  name = lambda g: f'BN {"on " if g[0] else "off"} {g[1]:5s} x{g[2]:g}'
  print(f'{name(a)}  -  {name(b)}   {x.mean() - y.mean():+.4f}  p = {p:.2g}')


print('Cost in points of test accuracy against the same BatchNorm setting '
      'at x1 (all kernels):')
for bn in (True, False):
  base = np.mean(ACC[(bn, 'all', 1.0)])
  for scaled in ('conv', 'dense', 'all'):
    costs = [100 * (base - np.mean(ACC[(bn, scaled, s)]))
             for s in (10.0, 100.0)]
    print(f'  BN {"on " if bn else "off"} {scaled:5s} x10 {costs[0]:.2f}  '
          f'x100 {costs[1]:.2f}')
print('Welch tests:')


for scale in (10.0, 100.0):
  for scaled in ('conv', 'dense'):
    compare((True, scaled, scale), (True, 'all', scale))
  compare((True, 'conv', scale), (True, 'dense', scale))
  compare((True, 'conv', scale), (True, 'all', 1.0))
  for scaled in ('conv', 'dense'):
    compare((True, scaled, scale), (False, scaled, scale))
