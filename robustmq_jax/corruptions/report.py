"""The corruption section of the report, from the suite's result rows."""

import math
from typing import Any, Mapping, Sequence

from robustmq_jax.corruptions import metrics

FLOAT_PRECISION = 'fp32'


def _fmt(x: float, scale: float = 100.0, digits: int = 1) -> str:
  return '—' if x is None or math.isnan(x) else f'{x * scale:.{digits}f}'


def _setting(params: Mapping[str, Any]) -> tuple:
  return tuple(sorted((k, v) for k, v in params.items() if k != 'severity'))


def _collect(rows):
  """{(dataset, setting): {(model, precision): {'clean': acc, (c, s): acc}}}."""
  out: dict[tuple, dict[tuple, dict]] = {}
  for r in rows:
    if r.get('suite', 'corruption') != 'corruption' or 'accuracy' not in r:
      continue
    params = dict(r.get('params') or {})
    sev = int(params.get('severity', 0))
    key = (r.get('dataset', '?'), _setting(params))
    mp = (r.get('model', '?'), r.get('precision', '?'))
    cell = out.setdefault(key, {}).setdefault(mp, {})
    if r.get('noise') == 'none':
      cell['clean'] = float(r['accuracy'])
    else:
      cell[(r['noise'], sev)] = float(r['accuracy'])
  return out


def _errors(cell) -> dict[str, dict[int, float]]:
  errs: dict[str, dict[int, float]] = {}
  for k, acc in cell.items():
    if k != 'clean':
      errs.setdefault(k[0], {})[k[1]] = 1.0 - acc
  return errs


def _mean_acc(cell, names=None) -> float:
  vals = [a for k, a in cell.items()
          if k != 'clean' and (names is None or k[0] in names)]
  return sum(vals) / len(vals) if vals else math.nan


def _per_corruption_acc(cell) -> dict[str, float]:
  sums: dict[str, list[float]] = {}
  for k, a in cell.items():
    if k != 'clean':
      sums.setdefault(k[0], []).append(a)
  return {c: sum(v) / len(v) for c, v in sums.items()}


def summarize(rows: Sequence[Mapping[str, Any]],
              order: Sequence[str] = ()) -> str:
  """Markdown: mean corruption accuracy, per-corruption accuracy and CE per
  model/precision, and the most / least harmful corruptions for the
  quantized models."""
  groups = _collect(rows)
  if not groups:
    return ''
  lines = ['## Natural corruptions (ImageNet-C family)', '']
  lines.append(
      'Accuracies in %, corrupted on the fly on device (or read from a '
      'prepared ImageNet-C folder when `source` says so). "Mean" is the mean '
      'top-1 accuracy over the evaluated corruption x severity sets '
      '(RobustMQ\'s natural robustness); CE = sum of errors over severities '
      'relative to the normaliser (AlexNet on ImageNet; otherwise the fp32 '
      'model of the same architecture, so fp32 has CE = 100); mCE and '
      'relative mCE average the 15 benchmark corruptions only.')
  for (dataset, setting), models in groups.items():
    alexnet = 'imagenet' in dataset.lower() and dict(setting).get(
        'table', '224') == '224'
    lines += ['', f'### {dataset} — ' + ', '.join(
        f'{k}={v}' for k, v in setting), '']
    corrs = sorted({k[0] for cell in models.values() for k in cell
                    if k != 'clean'},
                   key=lambda c: (list(order).index(c) if c in order
                                  else len(order), c))
    norm_name = 'AlexNet' if alexnet else 'fp32 of the same model'
    lines.append('| model | precision | clean | mean (15) | mean (all) | '
                 f'mCE | rel. mCE | CE normaliser |')
    lines.append('|---|---|---|---|---|---|---|---|')
    ces_by_mp = {}
    partial = False
    for (model, prec), cell in models.items():
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
      ces_by_mp[(model, prec)] = ces
      rel = _fmt(metrics.mean_over_benchmark(rces))
      defined, present = metrics.count_defined(rces)
      if 0 < defined < present:
        rel += f' ({defined}/{present})'
        partial = True
      lines.append(
          f'| {model} | {prec} | {_fmt(cell.get("clean", math.nan))} | '
          f'{_fmt(_mean_acc(cell, metrics.BENCHMARK))} | '
          f'{_fmt(_mean_acc(cell))} | '
          f'{_fmt(metrics.mean_over_benchmark(ces))} | '
          f'{rel} | {norm_name} |')
    if partial:
      lines += ['', 'rel. mCE (k/15): relative CE is undefined where the '
                'normaliser\'s corrupted error does not exceed its clean '
                'error; the mean is over the k corruptions where it is '
                'defined.']
    mps = list(models)
    header = '| corruption | ' + ' | '.join(f'{m} {p}' for m, p in mps) + ' |'
    sep = '|---|' + '---|' * len(mps)
    lines += ['', 'Accuracy per corruption (mean over severities):', '',
              header, sep]
    accs = {mp: _per_corruption_acc(models[mp]) for mp in mps}
    for c in corrs:
      lines.append(f'| {c} | ' + ' | '.join(
          _fmt(accs[mp].get(c, math.nan)) for mp in mps) + ' |')
    lines += ['', f'CE per corruption (normaliser: {norm_name}):', '',
              header, sep]
    for c in corrs:
      lines.append(f'| {c} | ' + ' | '.join(
          _fmt(ces_by_mp[mp].get(c, math.nan)) for mp in mps) + ' |')
    quantized = [mp for mp in mps if mp[1] != FLOAT_PRECISION]
    if quantized:
      lines += ['', 'Most / least harmful corruptions for the quantized '
                'models (by accuracy drop from the model\'s own clean '
                'accuracy; "vs fp32": the largest extra drop over the fp32 '
                'model of the same architecture):', '']
      for mp in quantized:
        acc = accs[mp]
        if not acc:
          continue
        clean = models[mp].get('clean', math.nan)
        most = min(acc, key=acc.get)
        least = max(acc, key=acc.get)
        text = (f'- {mp[0]} {mp[1]}: most harmful **{most}** '
                f'({_fmt(acc[most])}%, drop {_fmt(clean - acc[most])} pts), '
                f'least harmful **{least}** ({_fmt(acc[least])}%, drop '
                f'{_fmt(clean - acc[least])} pts)')
        ref = accs.get((mp[0], FLOAT_PRECISION))
        if ref:
          gaps = {c: acc[c] - ref[c] for c in acc if c in ref}
          if gaps:
            worst = min(gaps, key=gaps.get)
            text += (f'; vs fp32 the largest extra loss is **{worst}** '
                     f'({_fmt(gaps[worst])} pts)')
        lines.append(text + '.')
  return '\n'.join(lines) + '\n'
