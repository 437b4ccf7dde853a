"""PNG plots of accuracy against precision (matplotlib, Agg backend)."""

import collections
import os
from typing import Any, Mapping, Sequence

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np


def _order(p: str):
  from robustmq_jax.reporting.report import precision_order  # pylint: disable=g-import-not-at-top
  return precision_order(p)


def write_plots(folder: str, rows: Sequence[Mapping[str, Any]]) -> list[str]:
  """One summary plot per model and one per (model, suite); returns paths."""
  if not rows:
    return []
  os.makedirs(folder, exist_ok=True)
  paths = []
  models = sorted({r['model'] for r in rows})
  for model in models:
    mrows = [r for r in rows if r['model'] == model]
    precs = sorted({r['precision'] for r in mrows}, key=_order)
    series = collections.defaultdict(dict)
    for suite in sorted({r['suite'] for r in mrows}):
      for p in precs:
        acc = [r['accuracy'] for r in mrows
               if r['suite'] == suite and r['precision'] == p]
        if acc:
          series[f'{suite} (mean)' if suite != 'clean' else 'clean'][p] = (
              float(np.mean(acc)))
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, vals in series.items():
      xs = [p for p in precs if p in vals]
      ax.plot(xs, [vals[p] for p in xs], marker='o', label=label)
    ax.set_xlabel('precision')
    ax.set_ylabel('top-1 accuracy')
    ax.set_ylim(0, 1.02)
    ax.set_title(f'{model}: accuracy by precision')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path = os.path.join(folder, f'summary_{model}.png')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    paths.append(path)
    for suite in sorted({r['suite'] for r in mrows} - {'clean'}):
      paths.append(_suite_plot(folder, model, suite,
                               [r for r in mrows if r['suite'] == suite],
                               precs))
  return paths


def _suite_plot(folder, model, suite, rows, precs) -> str:
  noises = sorted({r['noise'] for r in rows})
  fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(noises) * len(precs) / 3),
                                  4))
  width = 0.8 / max(len(precs), 1)
  for i, p in enumerate(precs):
    vals = []
    for n in noises:
      acc = [r['accuracy'] for r in rows
             if r['precision'] == p and r['noise'] == n]
      vals.append(float(np.mean(acc)) if acc else np.nan)
    ax.bar(np.arange(len(noises)) + i * width, vals, width, label=p)
  ax.set_xticks(np.arange(len(noises)) + 0.4 - width / 2)
  ax.set_xticklabels(noises, rotation=60, ha='right', fontsize=7)
  ax.set_ylabel('top-1 accuracy (mean over parameters)')
  ax.set_ylim(0, 1.02)
  ax.set_title(f'{model}: {suite}')
  ax.legend(fontsize=7)
  fig.tight_layout()
  path = os.path.join(folder, f'{suite}_{model}.png')
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
