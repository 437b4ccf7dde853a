"""Checks RobustMQ's four findings (arXiv 2308.02350) against result rows.

F1  Quantized models are more adversarially robust than float, but less
    robust to natural corruptions and systematic noise.
F2  More bits: lower adversarial robustness, higher natural and systematic
    robustness.
F3  Impulse noise and glass blur hurt quantized models most; brightness least.
F4  Nearest-neighbour resizing is the most harmful systematic noise; bilinear,
    cubic and area the least.

Each check states the numbers it used and whether the claim held on this data;
a suite that was not run makes its checks "not evaluated".
"""

import collections
from typing import Any, Mapping, Sequence

import numpy as np

# Adversarial rows that measure white-box robustness (transfer/black-box rows
# are reported separately by the adversarial suite).
_TRANSFER_PREFIX = 'transfer'


def _bits(precision: str) -> int:
  if precision == 'fp32':
    return 32
  digits = ''.join(c if c.isdigit() else ' ' for c in precision).split()
  return int(digits[0]) if digits else 32


def _suite_means(rows, suite, exclude_prefix=None):
  """{(model, precision): mean accuracy over the suite's cells}."""
  acc = collections.defaultdict(list)
  for r in rows:
    if r['suite'] != suite:
      continue
    if exclude_prefix and r['noise'].startswith(exclude_prefix):
      continue
    acc[(r['model'], r['precision'])].append(r['accuracy'])
  return {k: float(np.mean(v)) for k, v in acc.items()}


def _per_noise(rows, suite):
  """{(model, precision, noise): mean accuracy over params}."""
  acc = collections.defaultdict(list)
  for r in rows:
    if r['suite'] == suite:
      acc[(r['model'], r['precision'], r['noise'])].append(r['accuracy'])
  return {k: float(np.mean(v)) for k, v in acc.items()}


def _verdict(ok: bool | None) -> str:
  return {True: '**held**', False: '**did not hold**',
          None: 'not evaluated'}[ok]


def _f1_f2(rows) -> list[str]:
  out = []
  metrics = {
      'adversarial': _suite_means(rows, 'adversarial', _TRANSFER_PREFIX),
      'corruption': _suite_means(rows, 'corruption'),
      'systematic': _suite_means(rows, 'systematic'),
  }
  expect_higher = {'adversarial': True, 'corruption': False,
                   'systematic': False}
  models = sorted({m for d in metrics.values() for m, _ in d})
  f1, f2 = [], []
  for model in models:
    for suite, d in metrics.items():
      prec = sorted({p for m, p in d if m == model}, key=_bits)
      if 'fp32' not in prec or len(prec) < 2:
        continue
      fp = d[(model, 'fp32')]
      for p in prec:
        if p == 'fp32':
          continue
        q = d[(model, p)]
        ok = (q > fp) if expect_higher[suite] else (q < fp)
        f1.append(ok)
        out.append(f'- F1 {model} {suite}: {p} {q:.4f} vs fp32 {fp:.4f} '
                   f'({"higher" if q > fp else "not higher"}) -> '
                   f'{_verdict(ok)}')
      quantized = [p for p in prec if p != 'fp32']
      if len(quantized) >= 2:
        vals = [d[(model, p)] for p in quantized]  # increasing bits
        diffs = np.diff(vals)
        ok = bool(np.all(diffs <= 1e-9)) if expect_higher[suite] else bool(
            np.all(diffs >= -1e-9))
        f2.append(ok)
        trend = ', '.join(f'{p} {v:.4f}' for p, v in zip(quantized, vals))
        out.append(f'- F2 {model} {suite} ({"falls" if expect_higher[suite] else "rises"}'
                   f' with bits expected): {trend} -> {_verdict(ok)}')
  def tally(checks, what):
    if not checks:
      return _verdict(None) + ' (needs fp32 and quantized rows of a suite)'
    return f'{_verdict(all(checks))} in {sum(checks)}/{len(checks)} {what}'

  head = [f'- **F1** (quantized: more adversarially robust, less robust to '
          f'corruptions and systematic noise): {tally(f1, "comparisons")}.',
          f'- **F2** (more bits: less adversarially robust, more robust to '
          f'corruptions and systematic noise): {tally(f2, "trends")}.']
  return head + ['', '<details><summary>F1/F2 details</summary>', ''] + out + [
      '', '</details>']


def _drops(rows, suite):
  """{noise: mean over models and quantized precisions of (fp32 - q) acc}."""
  per = _per_noise(rows, suite)
  drops = collections.defaultdict(list)
  for (m, p, noise), acc in per.items():
    if p == 'fp32' or (m, 'fp32', noise) not in per:
      continue
    drops[noise].append(per[(m, 'fp32', noise)] - acc)
  return {k: float(np.mean(v)) for k, v in drops.items()}


def _f3(rows) -> str:
  drops = _drops(rows, 'corruption')
  if not drops:
    return f'- **F3** (impulse noise and glass blur hurt quantized models ' \
           f'most; brightness least): {_verdict(None)}.'
  # Harm to the quantized model: its accuracy under the corruption, relative
  # to the float model under the same corruption, is the paper's quantity.
  order = sorted(drops, key=drops.get, reverse=True)
  top2 = set(order[:2])
  ok = ({'impulse_noise', 'glass_blur'} & top2 != set()
        and order[-1] == 'brightness')
  return (f'- **F3** (impulse noise and glass blur hurt quantized models most;'
          f' brightness least): {_verdict(ok)}. Largest extra accuracy drop '
          f'of quantized vs fp32: {", ".join(f"{n} {drops[n]:+.4f}" for n in order[:3])}; '
          f'smallest: {order[-1]} {drops[order[-1]]:+.4f}.')


def _f4(rows) -> str:
  per = collections.defaultdict(list)
  for r in rows:
    if r['suite'] == 'systematic':
      per[r['noise']].append(r['accuracy'])
  if len(per) < 3:
    return (f'- **F4** (nearest-neighbour most harmful; bilinear, cubic, area '
            f'least): {_verdict(None)}.')
  mean = {k: float(np.mean(v)) for k, v in per.items()}
  order = sorted(mean, key=mean.get)  # most harmful first
  mild = {'pil_bilinear', 'cv2_linear', 'pil_bicubic', 'cv2_cubic', 'cv2_area'}
  ok = 'nearest' in order[0] and len(set(order[-3:]) & mild) >= 2
  return (f'- **F4** (nearest-neighbour most harmful; bilinear, cubic, area '
          f'least): {_verdict(ok)}. Most harmful: {order[0]} '
          f'({mean[order[0]]:.4f}); least harmful: '
          f'{", ".join(f"{n} ({mean[n]:.4f})" for n in reversed(order[-3:]))}.')


def check(rows: Sequence[Mapping[str, Any]]) -> str:
  """Markdown bullet list with a verdict per finding."""
  lines = _f1_f2(rows)
  lines.insert(2, _f3(rows))
  lines.insert(3, _f4(rows))
  note = ('Verdicts describe this run only (its data, models, sample size); '
          'adversarial verdicts use white-box accuracy through the '
          'straight-through twin, so read them with the masking flags of the '
          'adversarial suite.')
  return '\n'.join(lines + ['', note])
