"""Verdict rules: how a measured difference becomes held / did_not_hold.

The rules (printed in the report and findings.json):

1. A *comparison* pits two measurements on the same examples: `a` (the model
   the claim is about, e.g. a quantized model) against `b` (e.g. its float
   model), with an expected direction (`a` higher or lower). It uses paired
   per-example outcomes when both cells stored them (exact McNemar / sign
   test, paired-bootstrap interval), else two independent proportions
   (score test, Newcombe interval) — cells on different examples without
   per-example outcomes cannot be compared and are `inconclusive`.
2. Within one finding the p-values are Holm-corrected (family-wise error
   `ALPHA` = 5 %). Each comparison's interval is reported at its Holm
   step's level, alpha / (m - rank), so it excludes 0 exactly when the test
   rejects, up to the bootstrap.
3. A comparison is `inconclusive` when fewer than `MIN_EXAMPLES` examples
   are shared, when its Holm-adjusted p is >= alpha, or when its adjusted
   interval contains 0 (ties, overlapping results); otherwise it is `held`
   when the difference has the expected sign and `did_not_hold` when it
   has the opposite sign.
4. A comparison whose cell carries a gradient-masking flag is `masked`: the
   attack may have failed for want of gradients, so the cell is no evidence
   of robustness. Masked comparisons are listed but not counted and not part
   of the Holm family.
5. A finding *did not hold* if any of its comparisons did not hold; it
   *held* if none did not hold and at least half of its counted (unmasked)
   comparisons held; otherwise — no comparison, or mostly inconclusive — it
   is `inconclusive`.
"""

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from robustmq_jax.reporting import stats
from robustmq_jax.results import outcomes

ALPHA = stats.ALPHA
MIN_EXAMPLES = 30
OUTCOMES = ('held', 'did_not_hold', 'inconclusive', 'masked')

RULES = (
    f'Each comparison tests a difference between two measurements on the '
    f'same examples: paired when per-example outcomes were stored (exact '
    f'McNemar / sign test, paired-bootstrap interval), otherwise as two '
    f'independent proportions (score test, Newcombe interval). p-values are '
    f'Holm-corrected across the comparisons of one finding (family-wise '
    f'{ALPHA:.0%}), and each interval is given at its Holm step\'s level. A '
    f'comparison is **inconclusive** when fewer than {MIN_EXAMPLES} examples '
    f'are shared, the adjusted p is >= {ALPHA:g} or the adjusted interval '
    f'contains 0; else **held** if the difference has the claimed sign, '
    f'**did not hold** if the opposite. A comparison whose cell carries a '
    f'gradient-masking flag is **masked**: no evidence of robustness, not '
    f'counted. A finding did not hold if any comparison did not hold; held if '
    f'none did not hold and at least half of the counted comparisons held; '
    f'otherwise it is inconclusive.')

# A comparison's callable private fields (leading underscore) are dropped
# from findings.json by `public`.
_CI = '_ci'


def _sign(expect: str) -> int:
  if expect not in ('higher', 'lower'):
    raise ValueError(f'expect={expect!r}; allowed: higher, lower')
  return 1 if expect == 'higher' else -1


def _comparison(what: str, method: str, expect: str, a: float, b: float,
                diff: stats.Difference, ci: Callable[[float], tuple],
                **extra: Any) -> dict[str, Any]:
  out = {'what': what, 'method': method, 'expect': expect, 'a': float(a),
         'b': float(b), 'diff': diff.diff, 'ci_low': diff.ci_low,
         'ci_high': diff.ci_high, 'p': diff.p, 'p_adjusted': diff.p,
         'n': diff.n, 'paired': diff.paired, 'outcome': 'inconclusive',
         _CI: ci}
  out.update(extra)
  return out


def compare_scores(a: np.ndarray, b: np.ndarray, *, expect: str, what: str,
                   method: str, masked: bool = False, seed: int = 0,
                   **extra: Any) -> dict[str, Any]:
  """A paired comparison of per-example scores (aligned by example)."""
  _sign(expect)
  # The interval is computed once, at its Holm level, by `decide`.
  d = stats.paired_difference(a, b, seed=seed, interval=False)
  ci = lambda alpha: stats.paired_difference(a, b, alpha=alpha, seed=seed)
  return _comparison(what, method, expect, float(np.mean(a)),
                     float(np.mean(b)), d, ci, masked=masked, **extra)


def compare_unpaired(acc_a: float, n_a: int, acc_b: float, n_b: int, *,
                     expect: str, what: str, method: str,
                     masked: bool = False, **extra: Any) -> dict[str, Any]:
  """A comparison of two accuracies without per-example outcomes."""
  _sign(expect)
  d = stats.unpaired_difference(acc_a, n_a, acc_b, n_b)
  ci = lambda alpha: stats.unpaired_difference(acc_a, n_a, acc_b, n_b,
                                               alpha=alpha)
  return _comparison(what, method, expect, acc_a, acc_b, d, ci,
                     masked=masked, **extra)


def compare_cells(rows_a: Sequence[Mapping[str, Any]],
                  rows_b: Sequence[Mapping[str, Any]], *, expect: str,
                  what: str, method: str, masked: bool | None = None,
                  **extra: Any) -> dict[str, Any]:
  """Mean accuracy over cells `rows_a` against the same over `rows_b`.

  One row each compares two cells; several (e.g. the 75 ImageNet-C cells)
  compare per-example mean scores. Paired on the examples every row shares
  when all rows carry outcomes; otherwise unpaired, and then only when every
  cell evaluated the same number of examples (one cell's n is used: cells
  of an aggregate share their examples, so this is conservative).

  Args:
    rows_a, rows_b: result rows (non-empty).
    expect: 'higher' if the claim says a > b, 'lower' if a < b.
    what: a short description of the comparison.
    method: the quantization method the comparison is made within.
    masked: force the masked outcome; by default any row of `rows_a` with
      `masking_flag` set masks the comparison.
    **extra: more fields of the comparison (model, family, ...).

  Returns:
    A comparison dict (outcome settled by `decide`).
  """
  if masked is None:
    masked = any(bool(r.get('masking_flag')) for r in rows_a)
  rows = list(rows_a) + list(rows_b)
  got = outcomes.aligned(rows)
  if got is not None:
    _, hits = got
    a = hits[:len(rows_a)].mean(axis=0)
    b = hits[len(rows_a):].mean(axis=0)
    return compare_scores(a, b, expect=expect, what=what, method=method,
                          masked=masked, **extra)
  acc_a = float(np.mean([r['accuracy'] for r in rows_a]))
  acc_b = float(np.mean([r['accuracy'] for r in rows_b]))
  ns = {int(r['n']) for r in rows}
  if len(ns) != 1:
    d = stats.Difference(acc_a - acc_b, -1.0, 1.0, 1.0, min(ns), False)
    return _comparison(what, method, expect, acc_a, acc_b, d,
                       lambda alpha: d, masked=masked,
                       note='cells evaluated different examples and carry no '
                       'per-example outcomes', forced_inconclusive=True,
                       **extra)
  n = ns.pop()
  return compare_unpaired(acc_a, n, acc_b, n, expect=expect, what=what,
                          method=method, masked=masked, **extra)


def compare(row_a: Mapping[str, Any], row_b: Mapping[str, Any], *,
            expect: str, what: str, method: str,
            **extra: Any) -> dict[str, Any]:
  """Two cells (one row each); see `compare_cells`."""
  return compare_cells([row_a], [row_b], expect=expect, what=what,
                       method=method, **extra)


def compare_trend(score_columns: Sequence[np.ndarray] | None,
                  accs: Sequence[float], ns: Sequence[int],
                  bits: Sequence[float], *, expect: str, what: str,
                  method: str, masked: bool = False,
                  **extra: Any) -> dict[str, Any]:
  """Slope of accuracy on bit width; 'higher' = accuracy rises with bits.

  `a` and `b` are the accuracies at the most and the fewest bits, `diff`
  the least-squares slope in accuracy per unit of `bits` (pass bits scaled
  to [0, 1] for the fitted change over the range). Paired when
  `score_columns` (per-example scores per bit width, aligned) is given.
  """
  _sign(expect)
  hi, lo = int(np.argmax(bits)), int(np.argmin(bits))
  if score_columns is not None:
    scores = np.stack(score_columns, axis=1)
    d = stats.paired_trend(scores, bits, interval=False)
    ci = lambda alpha: stats.paired_trend(scores, bits, alpha=alpha)
  else:
    d = stats.unpaired_trend(accs, ns, bits)
    ci = lambda alpha: stats.unpaired_trend(accs, ns, bits, alpha=alpha)
  return _comparison(what, method, expect, accs[hi], accs[lo], d, ci,
                     masked=masked, **extra)


def decide(comparisons: list[dict[str, Any]],
           alpha: float = ALPHA) -> list[dict[str, Any]]:
  """Applies the rules of this module to one finding's comparisons.

  Sets `outcome`, `p_adjusted` and the Holm-level `ci_low`/`ci_high` of
  every comparison (in place; also returned).
  """
  family = [c for c in comparisons if not c.get('masked')]
  p_adj = stats.holm([c['p'] for c in family], alpha)
  levels = stats.holm_levels([c['p'] for c in family], alpha)
  for c, p, level in zip(family, p_adj, levels):
    d = c[_CI](float(level))
    c['ci_low'], c['ci_high'] = d.ci_low, d.ci_high
    c['ci_level'] = float(1 - level)
    c['p_adjusted'] = float(p)
    excludes_zero = d.ci_low > 0 or d.ci_high < 0
    if (c.get('forced_inconclusive') or c['n'] < MIN_EXAMPLES
        or p >= alpha or not excludes_zero):
      c['outcome'] = 'inconclusive'
    elif np.sign(c['diff']) == _sign(c['expect']):
      c['outcome'] = 'held'
    else:
      c['outcome'] = 'did_not_hold'
  for c in comparisons:
    if c.get('masked'):
      c['outcome'] = 'masked'
      d = c[_CI](alpha)
      c['ci_low'], c['ci_high'] = d.ci_low, d.ci_high
      c['ci_level'] = float(1 - alpha)
  return comparisons


def tally(comparisons: Sequence[Mapping[str, Any]]) -> dict[str, int]:
  """Counts of each outcome."""
  return {o: sum(c['outcome'] == o for c in comparisons) for o in OUTCOMES}


def finding_verdict(comparisons: Sequence[Mapping[str, Any]]) -> str:
  """Rule 5 of the module docstring."""
  t = tally(comparisons)
  counted = t['held'] + t['did_not_hold'] + t['inconclusive']
  if t['did_not_hold']:
    return 'did_not_hold'
  if counted and 2 * t['held'] >= counted:
    return 'held'
  return 'inconclusive'


def public(comparison: Mapping[str, Any]) -> dict[str, Any]:
  """The JSON-serialisable fields of a comparison."""
  return {k: v for k, v in comparison.items() if not k.startswith('_')}
