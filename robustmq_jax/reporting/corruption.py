"""The natural-corruption section (ImageNet-C family) of the report.

Per (dataset, corruption setting): clean accuracy, mean corruption accuracy
over severities 1-5 (the uncorrupted `none` cell, severity 0, is never part
of a mean), mCE and relative mCE, accuracy and CE per corruption, and the
most / least harmful corruption of each quantized model.
"""

import math
from typing import Any, Mapping, Sequence

from robustmq_jax.corruptions import metrics
from robustmq_jax.reporting import format as fmt

FLOAT_PRECISION = 'fp32'
# The 15 benchmark corruptions then the 4 extras (robustmq_jax.corruptions).
BENCHMARK = metrics.BENCHMARK
ORDER = BENCHMARK + ('speckle_noise', 'gaussian_blur', 'spatter',
                             'saturate')


def _setting(params: Mapping[str, Any]) -> tuple:
  return tuple(sorted((k, v) for k, v in params.items() if k != 'severity'))


def collect(rows: Sequence[Mapping[str, Any]]) -> dict:
  """{(dataset, setting): {(model, precision): {'clean': acc, (c, s): row}}}.

  Only corrupted cells at severity >= 1 are keyed by (corruption, severity);
  the `none` cell (severity 0) becomes 'clean'.
  """
  out: dict[tuple, dict[tuple, dict]] = {}
  for r in rows:
    if r.get('suite') != 'corruption' or 'accuracy' not in r:
      continue
    params = dict(r.get('params') or {})
    sev = int(params.get('severity', 0))
    key = (r.get('dataset', '?'), _setting(params))
    mp = (r.get('model', '?'), r.get('precision', '?'))
    cell = out.setdefault(key, {}).setdefault(mp, {})
    if r.get('noise') == 'none' or sev < 1:
      cell['clean'] = float(r['accuracy'])
    else:
      cell[(r['noise'], sev)] = r
  return out


def _cells(cell, names=None):
  return [r for k, r in cell.items()
          if k != 'clean' and (names is None or k[0] in names)]


def mean_accuracy(cell, names=None) -> tuple[float, int]:
  """Mean accuracy over corrupted cells (severity >= 1) and their count."""
  vals = [float(r['accuracy']) for r in _cells(cell, names)]
  return (sum(vals) / len(vals) if vals else math.nan), len(vals)


def _errors(cell) -> dict[str, dict[int, float]]:
  errs: dict[str, dict[int, float]] = {}
  for k, r in cell.items():
    if k != 'clean':
      errs.setdefault(k[0], {})[k[1]] = 1.0 - float(r['accuracy'])
  return errs


def per_corruption(cell) -> dict[str, float]:
  """Mean accuracy over severities 1-5 of each corruption."""
  sums: dict[str, list[float]] = {}
  for k, r in cell.items():
    if k != 'clean':
      sums.setdefault(k[0], []).append(float(r['accuracy']))
  return {c: sum(v) / len(v) for c, v in sums.items()}


def ordered(names) -> list[str]:
  """Corruption names in the benchmark order, extras and unknowns after."""
  return sorted(names, key=lambda c: (ORDER.index(c) if c in ORDER
                                      else len(ORDER), c))


def _group(dataset, setting, models) -> list[Any]:
  alexnet = 'imagenet' in dataset.lower() and dict(setting).get(
      'table', '224') == '224'
  norm_name = 'AlexNet' if alexnet else 'fp32 of the same model'
  mps = sorted(models, key=lambda mp: (mp[0], fmt.precision_order(mp[1])))
  body, ces_by_mp, partial = [], {}, False
  for mp in mps:
    model, prec = mp
    cell = models[mp]
    errs = _errors(cell)
    clean_err = 1.0 - cell['clean'] if 'clean' in cell else math.nan
    if alexnet:
      base = {c: metrics.alexnet_errors(c) for c in metrics.ALEXNET_ERRORS}
      base_clean = metrics.ALEXNET_CLEAN_ERROR
    else:
      ref = models.get((model, FLOAT_PRECISION))
      base = _errors(ref) if ref else {}
      base_clean = (1.0 - ref['clean']) if ref and 'clean' in ref else (
          math.nan)
    ces = {c: metrics.corruption_error(e, base[c])
           for c, e in errs.items() if c in base}
    rces = {c: metrics.relative_corruption_error(e, clean_err, base[c],
                                                 base_clean)
            for c, e in errs.items() if c in base}
    ces_by_mp[mp] = ces
    rel = fmt.pct(metrics.mean_over_benchmark(rces))
    defined, present = metrics.count_defined(rces)
    if 0 < defined < present:
      rel += f' ({defined}/{present})'
      partial = True
    m15, n15 = mean_accuracy(cell, metrics.BENCHMARK)
    mall, nall = mean_accuracy(cell)
    ns = sorted({int(r['n']) for r in _cells(cell)})
    body.append([model, prec, '/'.join(map(str, ns)) or fmt.MISSING,
                 fmt.pct(cell.get('clean')), fmt.pct(m15), str(n15),
                 fmt.drop(cell.get('clean'), m15), fmt.pct(mall), str(nall),
                 fmt.pct(metrics.mean_over_benchmark(ces)), rel])
  out = [f'#### {dataset} — ' + (', '.join(f'{k}={v}' for k, v in setting)
                                  or 'default'),
         fmt.Table(['model', 'precision', 'n', 'clean %', 'mean (15) %',
                    'cells (15)', 'drop (15)', 'mean (all) %', 'cells (all)',
                    'mCE %', 'rel. mCE %'], body,
                   f'CE normaliser: {norm_name}.')]
  if partial:
    out.append('rel. mCE (k/15): relative CE is undefined where the '
               'normaliser\'s corrupted error does not exceed its clean '
               'error; the mean is over the k corruptions where it is '
               'defined.')
  corrs = ordered({k[0] for cell in models.values() for k in cell
                    if k != 'clean'})
  header = ['corruption'] + [f'{m} {p}' for m, p in mps]
  accs = {mp: per_corruption(models[mp]) for mp in mps}
  out.append(fmt.Table(header, [
      [c] + [fmt.pct(accs[mp].get(c)) for mp in mps] for c in corrs],
      'Accuracy (%) per corruption, mean over severities 1–5:'))
  out.append(fmt.Table(header, [
      [c] + [fmt.pct(ces_by_mp[mp].get(c)) for mp in mps] for c in corrs],
      f'CE (%) per corruption (normaliser: {norm_name}):'))
  harm = []
  for mp in mps:
    acc = accs[mp]
    if mp[1] == FLOAT_PRECISION or not acc:
      continue
    clean = models[mp].get('clean')
    most, least = min(acc, key=acc.get), max(acc, key=acc.get)
    text = (f'- {mp[0]} {mp[1]}: most harmful **{most}** '
            f'({fmt.pct(acc[most])}%, drop {fmt.drop(clean, acc[most])}), '
            f'least harmful **{least}** ({fmt.pct(acc[least])}%, drop '
            f'{fmt.drop(clean, acc[least])})')
    ref = accs.get((mp[0], FLOAT_PRECISION))
    if ref:
      gaps = {c: ref[c] - acc[c] for c in acc if c in ref}
      if gaps:
        worst = max(gaps, key=gaps.get)
        text += (f'; the largest extra drop over fp32 is **{worst}** '
                 f'({fmt.pct(gaps[worst])} points)')
    harm.append(text + '.')
  if harm:
    out.append('Most / least harmful corruptions for the quantized models '
               '(drop: points below the model\'s own clean accuracy; all 19 '
               'corruptions; F3 in the findings ranks the 15 benchmark '
               'ones):\n' + '\n'.join(harm))
  return out


def section(rows: Sequence[Mapping[str, Any]]) -> fmt.Section | None:
  """The corruption section (None when there are no corruption rows)."""
  groups = collect(rows)
  if not groups:
    return None
  blocks: list[Any] = [
      'Accuracy in %, drops in points (positive: accuracy fell). "mean (15)"'
      ' is the mean top-1 accuracy over the 15 benchmark corruptions at '
      'severities 1–5 (RobustMQ\'s natural robustness), "mean (all)" over '
      'every evaluated corruption; "cells" counts the corruption × severity '
      'cells in a mean (the uncorrupted cell, severity 0, is never one) and '
      '"n" the examples per cell. CE = sum of errors over severities '
      'relative to the normaliser (AlexNet on ImageNet; otherwise the fp32 '
      'model of the same architecture, so fp32 has CE = 100); mCE and '
      'relative mCE average the 15 benchmark corruptions.']
  for (dataset, setting), models in sorted(groups.items(),
                                           key=lambda kv: str(kv[0])):
    blocks += _group(dataset, setting, models)
  return fmt.Section('Natural corruptions (ImageNet-C family)', blocks,
                     'corruption')
