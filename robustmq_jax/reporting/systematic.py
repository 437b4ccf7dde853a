"""The systematic-noise section (ImageNet-S) of the report.

Per (dataset, model, precision, protocol): the decoder x resize accuracy
table, mean and spread over the grid, the drop of every cell against the
reference pipeline (PIL decode + PIL bilinear), and the rankings of resize
methods (mean over decoders) and of decoders (mean over resizes). A final
table compares models and precisions.
"""

import collections
import json
from typing import Any, Mapping, Sequence

import numpy as np

from robustmq_jax.reporting import format as fmt
from robustmq_jax.systematic.decoders import DECODERS
from robustmq_jax.systematic.decoders import REFERENCE_DECODER
from robustmq_jax.systematic.resample import METHODS
from robustmq_jax.systematic.resample import REFERENCE_METHOD


def _rank(order: Sequence[str], value: Mapping[str, float],
          ref: float | None) -> str:
  parts = []
  for n in order:
    d = '' if ref is None else f', drop {fmt.drop(ref, value[n])}'
    parts.append(f'{n} ({fmt.pct(value[n])}%{d})')
  return ', '.join(parts)


def grid_stats(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """Statistics of one (dataset, model, precision, protocol) grid."""
  acc = {(r['params']['decoder'], r['noise']): r['accuracy'] for r in rows}
  decoders = [d for d in DECODERS if any(k[0] == d for k in acc)]
  decoders += sorted({k[0] for k in acc} - set(decoders))
  resizes = [m for m in METHODS if any(k[1] == m for k in acc)]
  resizes += sorted({k[1] for k in acc} - set(resizes))
  values = np.asarray(list(acc.values()), np.float64)
  ref = acc.get((REFERENCE_DECODER, REFERENCE_METHOD))
  by_resize = {m: float(np.mean([v for (_, mm), v in acc.items() if mm == m]))
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
      'n': sorted({int(r['n']) for r in rows}),
  }


def _grid(title: str, s: dict[str, Any]) -> list[Any]:
  acc, ref = s['acc'], s['ref']
  header = ['decoder \\ resize'] + s['resizes'] + ['mean']
  body = [[d] + [fmt.pct(acc.get((d, m))) for m in s['resizes']]
          + [fmt.pct(s['by_decoder'][d])] for d in s['decoders']]
  body.append(['mean'] + [fmt.pct(s['by_resize'][m]) for m in s['resizes']]
              + [fmt.pct(s['mean'])])
  ref_txt = (f'reference (pil + pil_bilinear) {fmt.pct(ref)}%; '
             if ref is not None else
             'reference pipeline (pil + pil_bilinear) not in the grid; ')
  lines = [f'Top-1 accuracy (%), n = {"/".join(map(str, s["n"]))} examples '
           f'per cell. {ref_txt}grid mean {fmt.pct(s["mean"])}% ± '
           f'{fmt.pct(s["std"])} (std) over {len(acc)} pipelines.']
  if ref is not None:
    drops = {k: ref - v for k, v in acc.items()}
    worst = max(drops, key=drops.get)
    lines.append(f'Drop vs reference (points, positive: accuracy fell): mean '
                 f'{fmt.pct(float(np.mean(list(drops.values()))))}, largest '
                 f'{fmt.pct(drops[worst])} ({worst[0]} + {worst[1]}).')
  lines.append('Resize methods, most harmful first (mean over decoders): '
               + _rank(s['resize_order'], s['by_resize'], ref) + '.')
  lines.append('Decoders, most harmful first (mean over resizes): '
               + _rank(s['decoder_order'], s['by_decoder'], ref) + '.')
  lines.append(f'Most harmful resize: **{s["most_harmful"]}**; least harmful '
               f'(other than the reference): **{s["least_harmful"]}**.')
  if s['failures']:
    lines.append(f'Decode failures (counted as errors): {s["failures"]}.')
  return [f'#### {title}', fmt.Table(header, body), ' '.join(lines)]


def groups(rows: Sequence[Mapping[str, Any]]) -> dict[tuple, list]:
  """{(dataset, model, precision, geometry json): rows}."""
  out = collections.defaultdict(list)
  for r in rows:
    if r.get('suite') != 'systematic':
      continue
    p = r['params']
    geo = json.dumps({k: v for k, v in p.items() if k != 'decoder'},
                     sort_keys=True)
    out[(r.get('dataset', ''), r['model'], r['precision'], geo)].append(r)
  return out


def section(rows: Sequence[Mapping[str, Any]]) -> fmt.Section | None:
  """The systematic section (None when there are no systematic rows)."""
  by = groups(rows)
  if not by:
    return None
  keys = sorted(by, key=lambda k: (k[0], k[1], fmt.precision_order(k[2]),
                                   k[3]))
  skipped = {}
  for r in rows:
    if r.get('suite') == 'systematic':
      skipped.update(r.get('skipped_decoders') or {})
  blocks: list[Any] = [
      'Systematic noise (ImageNet-S): accuracy (%) per decoder × resize, '
      'square resize then centre crop (see params). Drops are in points '
      'against the reference pipeline PIL decode + PIL bilinear (positive: '
      'accuracy fell).']
  if skipped:
    why = collections.defaultdict(list)
    for k, v in skipped.items():
      why[v].append(k)
    blocks.append('Skipped decoders (not available where this ran): ' +
                  '; '.join(f'{", ".join(sorted(ks))} ({v})'
                            for v, ks in sorted(why.items())) + '.')
  summary = []
  for key in keys:
    s = grid_stats(by[key])
    geo = ', '.join(f'{k}={v}' for k, v in json.loads(key[3]).items())
    blocks += _grid(f'{key[1]} {key[2]} ({key[0]}; {geo})', s)
    summary.append([key[1], key[2], fmt.pct(s['ref']), fmt.pct(s['mean']),
                    fmt.pct(s['std']), fmt.drop(s['ref'], s['mean']),
                    s['most_harmful'], s['least_harmful']])
  if len(keys) > 1:
    blocks += ['#### Models and precisions', fmt.Table(
        ['model', 'precision', 'reference %', 'grid mean %', 'grid std',
         'mean drop', 'most harmful', 'least harmful'], summary)]
  return fmt.Section('Systematic noise (decoders × resize)', blocks,
                     'systematic')
