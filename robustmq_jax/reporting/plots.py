"""PNG plots of the report (matplotlib, Agg backend).

Per (dataset, model): accuracy vs ε per attack family, accuracy vs severity
per corruption (small multiples), decoder × resize heatmaps per precision,
and accuracy vs bit width per quantization method. Bands and error bars are
Wilson 95% intervals of each accuracy (k = round(accuracy · n)); legends sit
outside the axes.
"""

import collections
import dataclasses
import os
from typing import Any, Mapping, Sequence

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from robustmq_jax.reporting import adversarial
from robustmq_jax.reporting import corruption
from robustmq_jax.reporting import format as fmt
from robustmq_jax.reporting import systematic

_DPI = 100
_ADV = 'adversarial (mean over attacks, ε)'


@dataclasses.dataclass
class Plot:
  """A written PNG and its caption."""
  path: str
  caption: str


def label(r: Mapping[str, Any]) -> str:
  """A row's model variant: 'w4a4 (lsq)', 'fp32', 'w4a4:dq'."""
  m, p = r.get('method', ''), r['precision']
  if not m or m == 'float' or p.endswith(':' + m):
    return p
  return f'{p} ({m})'


def _label_order(labels):
  return sorted(labels, key=lambda l: (fmt.precision_order(l.split(' ')[0]),
                                       l))


def _colors(labels) -> dict[str, Any]:
  cmap = plt.get_cmap('tab10')
  return {l: cmap(i % 10) for i, l in enumerate(_label_order(labels))}


def _band(ax, xs, accs, ns, color):
  lo, hi = zip(*(fmt.wilson(a, n) for a, n in zip(accs, ns)))
  ax.fill_between(xs, 100 * np.asarray(lo), 100 * np.asarray(hi),
                  color=color, alpha=0.18, linewidth=0)


def _save(fig, path: str) -> None:
  fig.savefig(path + '.tmp.png', dpi=_DPI, bbox_inches='tight')
  plt.close(fig)
  os.replace(path + '.tmp.png', path)


def _legend(fig, ax) -> None:
  """The legend of `ax`'s lines, right of the figure (never over data)."""
  handles, labels = ax.get_legend_handles_labels()
  if handles:
    fig.legend(handles, labels, loc='center left', bbox_to_anchor=(1.0, 0.5),
               fontsize=9, frameon=False, title='model')


def _layout(fig, title: str, hspace: float = 0.45,
            wspace: float = 0.3) -> None:
  # Fixed spacing instead of tight_layout (which draws the figure once more);
  # savefig's bbox_inches='tight' keeps the title and the outside legend.
  top = 1 - 0.35 / fig.get_figheight()
  fig.subplots_adjust(top=top, right=0.97, hspace=hspace, wspace=wspace)
  fig.suptitle(title, y=1.0, va='bottom')


def _percent_axis(ax) -> None:
  ax.set_ylim(-2, 102)
  ax.set_yticks([0, 25, 50, 75, 100])


def _grid(n: int, cols: int):
  cols = min(cols, n)
  rows = (n + cols - 1) // cols
  return rows, cols


def _adversarial(folder, tag, rows) -> Plot | None:
  fams = [f for f in adversarial.FAMILIES if any(r['noise'] == f
                                                 for r in rows)]
  fams += sorted({r['noise'] for r in rows} - set(fams))
  if not fams:
    return None
  colors = _colors({label(r) for r in rows})
  nr, nc = _grid(len(fams), 3)
  fig, axes = plt.subplots(nr, nc, figsize=(4.2 * nc, 3.3 * nr),
                           squeeze=False)
  for ax, fam in zip(axes.flat, fams):
    by = collections.defaultdict(list)
    for r in rows:
      if r['noise'] == fam:
        by[label(r)].append(r)
    for lab in _label_order(by):
      rs = sorted(by[lab], key=lambda r: fmt.eps_value(r['params']))
      xs = [fmt.eps_value(r['params']) for r in rs]
      accs = [r['accuracy'] for r in rs]
      ax.plot(xs, 100 * np.asarray(accs), marker='o', color=colors[lab],
              label=lab)
      _band(ax, xs, accs, [r['n'] for r in rs], colors[lab])
    linf = all('eps_255' in r['params'] for r in rows if r['noise'] == fam)
    ax.set_xlabel('ε (/255)' if linf else 'ε')
    ax.set_ylabel('accuracy (%)')
    _percent_axis(ax)
    ax.set_title(fam)
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(fams):]:
    ax.set_visible(False)
  _legend(fig, axes.flat[0])
  _layout(fig, f'{tag}: robust accuracy vs ε (bands: Wilson 95%)')
  path = os.path.join(folder, f'adversarial_{tag}.png')
  _save(fig, path)
  return Plot(path, f'{tag}: robust accuracy vs attack budget, one line per '
              'model variant, Wilson 95% bands.')


def _corruption(folder, tag, rows) -> Plot | None:
  names = corruption.ordered(
      {r['noise'] for r in rows if r['noise'] != 'none'})
  if not names:
    return None
  colors = _colors({label(r) for r in rows})
  clean = {label(r): r for r in rows if r['noise'] == 'none'}
  nr, nc = _grid(len(names), 5)
  # Same limits and ticks on every panel, set on each rather than shared:
  # matplotlib's shared axes propagate every limit change to all 19 panels
  # (most of this figure's drawing time).
  fig, axes = plt.subplots(nr, nc, figsize=(2.9 * nc, 2.5 * nr),
                           squeeze=False)
  for ax, name in zip(axes.flat, names):
    by = collections.defaultdict(list)
    for r in rows:
      if r['noise'] == name:
        by[label(r)].append(r)
    for lab in _label_order(by):
      rs = sorted(by[lab], key=lambda r: int(r['params'].get('severity', 0)))
      if lab in clean:
        rs = [clean[lab]] + rs
      xs = [int(r['params'].get('severity', 0)) for r in rs]
      accs = [r['accuracy'] for r in rs]
      ax.plot(xs, 100 * np.asarray(accs), marker='.', color=colors[lab],
              label=lab)
      _band(ax, xs, accs, [r['n'] for r in rs], colors[lab])
    extra = name not in corruption.BENCHMARK
    ax.set_title(name + (' (extra)' if extra else ''), fontsize=10,
                 color='dimgray' if extra else 'black')
    _percent_axis(ax)
    ax.set_xticks(range(0, 6))
    ax.grid(alpha=0.3)
  for i, ax in enumerate(axes.flat):
    if i >= len(names):
      ax.set_visible(False)
      continue
    ax.set_xlim(-0.25, 5.25)
    # Tick labels on the outer panels only: the lowest of each column and
    # the first of each row.
    if i + nc < len(names):
      ax.tick_params(labelbottom=False)
    else:
      ax.set_xlabel('severity')
    if i % nc:
      ax.tick_params(labelleft=False)
    else:
      ax.set_ylabel('accuracy (%)')
  _legend(fig, axes.flat[0])
  _layout(fig, f'{tag}: accuracy vs corruption severity (0 = uncorrupted; '
          'bands: Wilson 95%)', hspace=0.35, wspace=0.12)
  path = os.path.join(folder, f'corruption_{tag}.png')
  _save(fig, path)
  return Plot(path, f'{tag}: accuracy vs severity per corruption (severity '
              '0 is the uncorrupted cell), Wilson 95% bands.')


def _systematic(folder, tag, rows) -> Plot | None:
  by = collections.defaultdict(list)
  for r in rows:
    by[label(r)].append(r)
  labs = _label_order(by)
  if not labs:
    return None
  stats = {l: systematic.grid_stats(by[l]) for l in labs}
  nr, nc = _grid(len(labs), 3)
  s0 = stats[labs[0]]
  w = 0.55 * len(s0['resizes']) + 1.5
  h = 0.4 * len(s0['decoders']) + 1.6
  fig, axes = plt.subplots(nr, nc, figsize=(w * nc, h * nr), squeeze=False)
  image = None
  # One colour scale for every panel, stretched over the observed range.
  values = [100 * v for l in labs for v in stats[l]['acc'].values()]
  vmin, vmax = np.floor(min(values)), np.ceil(max(values))
  vmax = max(vmax, vmin + 1)
  for ax, lab in zip(axes.flat, labs):
    s = stats[lab]
    grid = np.array([[s['acc'].get((d, m), np.nan) for m in s['resizes']]
                     for d in s['decoders']], np.float64) * 100
    image = ax.imshow(grid, vmin=vmin, vmax=vmax, cmap='viridis',
                      aspect='auto')
    ax.set_xticks(range(len(s['resizes'])))
    ax.set_xticklabels(s['resizes'], rotation=60, ha='right', fontsize=8)
    ax.set_yticks(range(len(s['decoders'])))
    ax.set_yticklabels(s['decoders'], fontsize=8)
    for (i, j), v in np.ndenumerate(grid):
      if np.isfinite(v):
        ax.text(j, i, f'{v:.0f}', ha='center', va='center', fontsize=7,
                color='white' if v < (vmin + vmax) / 2 else 'black')
    ax.set_title(lab, fontsize=10)
  for ax in list(axes.flat)[len(labs):]:
    ax.set_visible(False)
  _layout(fig, f'{tag}: accuracy (%) per decoder × resize',
          hspace=1.6 / h + 0.2, wspace=0.35)
  if image is not None:
    fig.colorbar(image, ax=list(axes.flat), shrink=0.8, label='accuracy (%)')
  path = os.path.join(folder, f'systematic_{tag}.png')
  _save(fig, path)
  return Plot(path, f'{tag}: decoder × resize heatmaps, one per model '
              'variant (accuracy %, cell text rounded).')


def _bits(precision: str) -> int | None:
  base = precision.split(':')[0]
  if not base.startswith('w'):
    return None
  digits = ''.join(c if c.isdigit() else ' ' for c in base).split()
  return int(digits[0]) if digits else None


def _series(rows) -> dict[str, Mapping[str, float]]:
  """{series name: (mean accuracy, examples per cell)} of one variant."""
  out = {}
  groups = {
      'clean': [r for r in rows if r['suite'] == 'clean'],
      _ADV: [r for r in rows if r['suite'] == 'adversarial'],
      'corruption (mean, sev 1–5)': [
          r for r in rows if r['suite'] == 'corruption' and
          r['noise'] != 'none' and int(r['params'].get('severity', 1)) >= 1],
      'systematic (mean)': [r for r in rows if r['suite'] == 'systematic'],
  }
  for name, rs in groups.items():
    if rs:
      out[name] = (float(np.mean([r['accuracy'] for r in rs])),
                   min(int(r['n']) for r in rs))
  return out


def _bit_widths(folder, tag, rows) -> Plot | None:
  methods = sorted({r.get('method', '') for r in rows
                    if _bits(r['precision']) is not None})
  floats = [r for r in rows if r['precision'] == 'fp32' and
            r.get('method', 'float') == 'float']
  fseries = _series(floats)
  if not methods and not fseries:
    return None
  # A float-only run still gets its panel: the float levels alone.
  methods = methods or ['float model only']
  fig, axes = plt.subplots(1, len(methods), figsize=(4.4 * len(methods), 3.4),
                           squeeze=False)
  cmap = plt.get_cmap('tab10')
  names = ['clean', _ADV, 'corruption (mean, sev 1–5)',
           'systematic (mean)']
  for ax, method in zip(axes.flat, methods):
    by = collections.defaultdict(list)
    for r in rows:
      b = _bits(r['precision'])
      if b is not None and r.get('method', '') == method:
        by[b].append(r)
    bits = sorted(by)
    per_bit = {b: _series(by[b]) for b in bits}
    for i, name in enumerate(names):
      pts = [(b, *per_bit[b][name]) for b in bits if name in per_bit[b]]
      if pts:
        xs, accs, ns = zip(*pts)
        lo, hi = zip(*(fmt.wilson(a, n) for a, n in zip(accs, ns)))
        acc = 100 * np.asarray(accs)
        ax.errorbar(xs, acc, yerr=[acc - 100 * np.asarray(lo),
                                   100 * np.asarray(hi) - acc],
                    marker='o', capsize=3, color=cmap(i), label=name)
      if name in fseries:
        ax.axhline(100 * fseries[name][0], color=cmap(i), linestyle='--',
                   linewidth=1, label=None if pts else f'{name} (float)')
    ax.set_xticks(bits)
    ax.set_xlabel('weight bits')
    ax.set_ylabel('accuracy (%)')
    _percent_axis(ax)
    ax.set_title(method)
    ax.grid(alpha=0.3)
  handles, labels = axes.flat[0].get_legend_handles_labels()
  handles.append(plt.Line2D([], [], color='grey', linestyle='--'))
  labels.append('float model (dashed)')
  fig.legend(handles, labels, loc='center left', bbox_to_anchor=(1.0, 0.5),
             fontsize=9, frameon=False)
  _layout(fig, f'{tag}: accuracy vs bit width per quantization method')
  path = os.path.join(folder, f'bits_{tag}.png')
  _save(fig, path)
  return Plot(path, f'{tag}: accuracy vs weight bits per method (clean and '
              'suite means; error bars: Wilson 95% at the examples per '
              'cell; dashed: the float model).')


def write_plots(folder: str, rows: Sequence[Mapping[str, Any]]) -> list[Plot]:
  """All plots of `rows` into `folder`; returns them in report order."""
  if not rows:
    return []
  os.makedirs(folder, exist_ok=True)
  out = []
  by_model = collections.defaultdict(list)
  for r in rows:
    by_model[(r.get('dataset', ''), r['model'])].append(r)
  multi = len({k[0] for k in by_model}) > 1
  for (dataset, model), mrows in sorted(by_model.items()):
    tag = f'{dataset}_{model}' if multi else model
    tag = ''.join(c if c.isalnum() or c in '_-.' else '_' for c in tag)
    suite = collections.defaultdict(list)
    for r in mrows:
      suite[r['suite']].append(r)
    for plot in (_bit_widths(folder, tag, mrows),
                 _adversarial(folder, tag, suite['adversarial']),
                 _corruption(folder, tag, suite['corruption']),
                 _systematic(folder, tag, suite['systematic'])):
      if plot:
        out.append(plot)
  return out
