"""Markdown summary of the systematic suite's rows.

Per (dataset, model, precision, protocol): the decoder x resize accuracy
table, mean +- std over the grid, the drop of every cell against the
reference pipeline (PIL decode + PIL bilinear), and the rankings of resize
methods (mean over decoders) and of decoders (mean over resizes). A final
table compares models and precisions: reference accuracy, grid mean +- std,
mean drop, most and least harmful resize.
"""

import collections
import json
from typing import Any, Mapping, Sequence

import numpy as np

from robustmq_jax.systematic.decoders import DECODERS
from robustmq_jax.systematic.decoders import REFERENCE_DECODER
from robustmq_jax.systematic.resample import METHODS
from robustmq_jax.systematic.resample import REFERENCE_METHOD


def _table(header, body) -> str:
  from robustmq_jax.reporting.report import markdown_table  # pylint: disable=g-import-not-at-top
  return markdown_table(header, body)


def _order(p: str):
  from robustmq_jax.reporting.report import precision_order  # pylint: disable=g-import-not-at-top
  return precision_order(p)


def _pct(x: float | None) -> str:
  return '-' if x is None else f'{100 * x:.2f}'


def _rank(order: Sequence[str], value: Mapping[str, float], ref: float | None
          ) -> str:
  parts = []
  for n in order:
    drop = '' if ref is None else f', drop {100 * (ref - value[n]):+.2f}'
    parts.append(f'{n} ({_pct(value[n])}{drop})')
  return ', '.join(parts)


def grid_stats(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """Statistics of one (dataset, model, precision, protocol) grid."""
  acc = {(r['params']['decoder'], r['noise']): r['accuracy'] for r in rows}
  decoders = [d for d in DECODERS if any(k[0] == d for k in acc)]
  resizes = [m for m in METHODS if any(k[1] == m for k in acc)]
  values = np.asarray(list(acc.values()), np.float64)
  ref = acc.get((REFERENCE_DECODER, REFERENCE_METHOD))
  by_resize = {m: float(np.mean([v for (d, mm), v in acc.items() if mm == m]))
               for m in resizes}
  by_decoder = {d: float(np.mean([v for (dd, _), v in acc.items() if dd == d]))
                for d in decoders}
  resize_order = sorted(resizes, key=lambda m: by_resize[m])
  others = [m for m in resize_order if m != REFERENCE_METHOD] or resize_order
  return {
      'acc': acc, 'decoders': decoders, 'resizes': resizes, 'ref': ref,
      'mean': float(values.mean()), 'std': float(values.std()),
      'by_resize': by_resize, 'by_decoder': by_decoder,
      'resize_order': resize_order,
      'decoder_order': sorted(decoders, key=lambda d: by_decoder[d]),
      'most_harmful': others[0], 'least_harmful': others[-1],
      'failures': sum(int(r.get('decode_failures', 0)) for r in rows),
  }


def _grid_section(title: str, s: dict[str, Any]) -> list[str]:
  acc, ref = s['acc'], s['ref']
  header = ['decoder \\ resize'] + s['resizes'] + ['mean']
  body = [[d] + [_pct(acc.get((d, m))) for m in s['resizes']]
          + [_pct(s['by_decoder'][d])] for d in s['decoders']]
  body.append(['mean'] + [_pct(s['by_resize'][m]) for m in s['resizes']]
              + [_pct(s['mean'])])
  out = [f'#### {title}', '', _table(header, body), '']
  ref_txt = ('reference (pil + pil_bilinear) '
             f'{_pct(ref)}; ' if ref is not None else
             'reference pipeline (pil + pil_bilinear) not in the grid; ')
  out.append(f'Top-1 accuracy (%). {ref_txt}grid mean {_pct(s["mean"])} '
             f'+- {100 * s["std"]:.2f} over {len(acc)} pipelines.')
  if ref is not None:
    drops = {k: ref - v for k, v in acc.items()}
    worst = max(drops, key=drops.get)
    mean_drop = float(np.mean(list(drops.values())))
    out.append(f'Drop vs reference: mean {100 * mean_drop:+.2f}, largest '
               f'{100 * drops[worst]:+.2f} ({worst[0]} + {worst[1]}).')
  out.append('Resize methods, most harmful first (mean over decoders): '
             + _rank(s['resize_order'], s['by_resize'], ref) + '.')
  out.append('Decoders, most harmful first (mean over resizes): '
             + _rank(s['decoder_order'], s['by_decoder'], ref) + '.')
  out.append(f'Most harmful resize: **{s["most_harmful"]}**; least harmful '
             f'(other than the reference): **{s["least_harmful"]}**.')
  if s['failures']:
    out.append(f'Decode failures (counted as errors): {s["failures"]}.')
  return out + ['']


def summarize(rows: Sequence[Mapping[str, Any]]) -> str:
  """The suite's report section."""
  if not rows:
    return ''
  groups = collections.defaultdict(list)
  for r in rows:
    p = r['params']
    geo = json.dumps({k: v for k, v in p.items() if k != 'decoder'},
                     sort_keys=True)
    groups[(r['dataset'], r['model'], r['precision'], geo)].append(r)
  keys = sorted(groups, key=lambda k: (k[0], k[1], _order(k[2]), k[3]))
  skipped = {}
  for r in rows:
    skipped.update(r.get('skipped_decoders') or {})
  out = ['Systematic noise (ImageNet-S): accuracy per decoder x resize, '
         'square resize then centre crop (see params). Drops are against '
         'the reference pipeline PIL decode + PIL bilinear.', '']
  if skipped:
    why = collections.defaultdict(list)
    for k, v in skipped.items():
      why[v].append(k)
    out += ['Skipped decoders (not available where this ran): ' + '; '.join(
        f'{", ".join(sorted(ks))} ({v})' for v, ks in sorted(why.items()))
            + '.', '']
  summary = []
  for key in keys:
    s = grid_stats(groups[key])
    geo = ', '.join(f'{k}={v}' for k, v in json.loads(key[3]).items())
    out += _grid_section(f'{key[1]} {key[2]} ({key[0]}; {geo})', s)
    summary.append([key[1], key[2], _pct(s['ref']),
                    f'{_pct(s["mean"])} +- {100 * s["std"]:.2f}',
                    '-' if s['ref'] is None else
                    f'{100 * (s["ref"] - s["mean"]):+.2f}',
                    s['most_harmful'], s['least_harmful']])
  if len(keys) > 1:
    out += ['#### Models and precisions', '',
            _table(['model', 'precision', 'reference %', 'grid mean +- std %',
                    'mean drop', 'most harmful', 'least harmful'], summary),
            '']
  return '\n'.join(out).rstrip()
