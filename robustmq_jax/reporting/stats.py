"""Intervals and tests for accuracies measured on a finite set of examples.

Every accuracy in the report is k correct out of n examples, so each carries a
Wilson score interval. Two models evaluated on the same examples are compared
*paired*: only the examples on which they disagree carry information (exact
McNemar test = the sign test on per-example differences), and the interval of
the difference comes from a paired bootstrap over examples. When per-example
outcomes are missing (workdirs written before they were stored), the
comparison falls back to two independent proportions (Newcombe's hybrid
score interval and the score test), which is wider and says so.

Aggregates (the mean accuracy over several cells, e.g. the 75 ImageNet-C
cells) are per-example mean scores in [0, 1]; the same paired machinery
applies to them. Trends over bit widths are the least-squares slope of
accuracy on bits, computed per example so that its bootstrap interval and
test respect that every bit width saw the same examples.

References: `../shared/REFERENCE.md` §14; scipy / statsmodels do the
distributional work (binomial test, Newcombe interval, score test, Holm).
"""

import dataclasses
import math
import warnings
from typing import Sequence

import numpy as np
from scipy import stats as sp_stats
from statsmodels.stats import proportion

ALPHA = 0.05
BOOTSTRAP_RESAMPLES = 10_000
MIN_TAIL_RESAMPLES = 25


@dataclasses.dataclass(frozen=True)
class Difference:
  """An estimated difference (a - b) with its interval and two-sided p.

  Attributes:
    diff: point estimate of a - b (fractions of examples, or accuracy per bit
      for a trend).
    ci_low, ci_high: the (1 - alpha) interval of `diff`.
    p: two-sided p-value of "no difference".
    n: examples the estimate rests on.
    paired: whether per-example outcomes were used.
  """
  diff: float
  ci_low: float
  ci_high: float
  p: float
  n: int
  paired: bool


def wilson(k: float, n: int, alpha: float = ALPHA) -> tuple[float, float]:
  """Wilson score interval of k successes in n trials (k may be fractional)."""
  if n <= 0:
    return (0.0, 1.0)
  lo, hi = proportion.proportion_confint(k, n, alpha=alpha, method='wilson')
  return float(lo), float(hi)


def sign_test(d: np.ndarray) -> float:
  """Exact two-sided sign test of per-example differences `d` (ties dropped).

  For 0/1 outcomes this is the exact McNemar test: b = #(a right, b wrong)
  and c = #(a wrong, b right), p = binomial test of b in b + c at 1/2.
  """
  d = np.asarray(d, np.float64)
  pos, neg = int(np.sum(d > 0)), int(np.sum(d < 0))
  if pos + neg == 0:
    return 1.0
  # Two-sided exact binomial test at 1/2 (symmetric: twice the smaller
  # tail), as scipy.stats.binomtest computes it.
  return float(min(1.0, 2 * sp_stats.binom.cdf(min(pos, neg), pos + neg,
                                               0.5)))


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> float:
  """Exact McNemar p-value for two boolean outcome vectors on the same ids."""
  a, b = np.asarray(a, bool), np.asarray(b, bool)
  return sign_test(a.astype(np.int8) - b.astype(np.int8))


def bootstrap_mean_interval(d: np.ndarray, *, alpha: float = ALPHA,
                            resamples: int = BOOTSTRAP_RESAMPLES,
                            seed: int = 0) -> tuple[float, float]:
  """Percentile bootstrap interval of mean(d), resampling examples.

  Per-example values take few distinct values (0/±1 for two accuracies,
  multiples of 1/k for a mean over k cells), so a resample is drawn as a
  multinomial count of each distinct value: the same distribution as
  resampling ids with replacement, at O(distinct values) memory per draw.

  Multiplicity-corrected levels reach far into the tails (alpha / m with m
  comparisons); where a tail would hold fewer than `MIN_TAIL_RESAMPLES` of
  the resamples, the interval is the bootstrap distribution's normal limit
  instead: mean(d) ± z * sd(d) / sqrt(n), with the exact bootstrap standard
  deviation, clipped to [min(d), max(d)] where every resampled mean lies (a
  difference of two accuracies cannot pass ±100 points).
  """
  d = np.asarray(d, np.float64)
  n = d.size
  if n == 0:
    return (-math.inf, math.inf)
  values, counts = np.unique(d, return_counts=True)
  if values.size == 1:
    return (float(values[0]), float(values[0]))
  if alpha / 2 * resamples < MIN_TAIL_RESAMPLES:
    half = sp_stats.norm.ppf(1 - alpha / 2) * d.std() / math.sqrt(n)
    return (float(max(d.mean() - half, values[0])),
            float(min(d.mean() + half, values[-1])))
  rng = np.random.default_rng(seed)
  draws = rng.multinomial(n, counts / n, size=resamples)
  means = draws @ values / n
  lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
  return float(lo), float(hi)


def paired_difference(a: np.ndarray, b: np.ndarray, *,
                      alpha: float = ALPHA, seed: int = 0,
                      interval: bool = True) -> Difference:
  """a - b for per-example scores of two models on the same examples.

  Args:
    a, b: per-example scores in [0, 1] (booleans for one cell, means over
      cells for an aggregate), aligned by example id.
    alpha: 1 - confidence of the interval.
    seed: bootstrap seed (fixed, so a report is reproducible).
    interval: False skips the bootstrap (the interval is NaN), for callers
      that settle its level later.

  Returns:
    mean(a) - mean(b), its paired-bootstrap percentile interval and the exact
    sign-test (McNemar for booleans) p-value.
  """
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  lo, hi = (bootstrap_mean_interval(d, alpha=alpha, seed=seed) if interval
            else (math.nan, math.nan))
  return Difference(float(d.mean()) if d.size else 0.0, lo, hi, sign_test(d),
                    int(d.size), True)


def unpaired_difference(acc_a: float, n_a: int, acc_b: float, n_b: int, *,
                        alpha: float = ALPHA) -> Difference:
  """acc_a - acc_b for two accuracies treated as independent proportions.

  Newcombe's hybrid score interval and the score test (statsmodels). Used
  only when per-example outcomes are missing; for aggregates pass the
  examples of one cell as n (conservative: cells share their examples).
  """
  ka, kb = acc_a * n_a, acc_b * n_b
  diff = acc_a - acc_b
  if n_a <= 0 or n_b <= 0:
    return Difference(diff, -1.0, 1.0, 1.0, 0, False)
  lo, hi = proportion.confint_proportions_2indep(
      ka, n_a, kb, n_b, method='newcomb', compare='diff', alpha=alpha)
  if abs(diff) < 1e-12:
    p = 1.0
  else:
    with warnings.catch_warnings():  # Ratios at 0 % it computes but we skip.
      warnings.simplefilter('ignore', RuntimeWarning)
      res = proportion.test_proportions_2indep(
          ka, n_a, kb, n_b, method='score', compare='diff')
    p = float(res.pvalue)
  return Difference(float(diff), float(lo), float(hi), p, int(min(n_a, n_b)),
                    False)


def _slope_weights(bits: Sequence[float]) -> np.ndarray:
  x = np.asarray(bits, np.float64)
  xc = x - x.mean()
  return xc / np.sum(xc * xc)


def paired_trend(scores: np.ndarray, bits: Sequence[float], *,
                 alpha: float = ALPHA, seed: int = 0,
                 interval: bool = True) -> Difference:
  """Least-squares slope of accuracy on bits, examples shared by all bits.

  Args:
    scores: [n_examples, n_bits] per-example scores, columns ordered as
      `bits` (at least two distinct bit widths).
    bits: the bit width of each column.
    alpha, seed, interval: as in `paired_difference`.

  Returns:
    The slope (accuracy per bit) as `diff`; its paired-bootstrap interval;
    the p-value of a one-sample t-test of the per-example slopes (each
    example is one cluster of correlated outcomes across bit widths).
  """
  s = np.asarray(scores, np.float64) @ _slope_weights(bits)
  lo, hi = (bootstrap_mean_interval(s, alpha=alpha, seed=seed) if interval
            else (math.nan, math.nan))
  if s.size < 2 or np.all(s == s[0]):
    p = 1.0 if not s.size or s[0] == 0 else 0.0
  else:
    p = float(sp_stats.ttest_1samp(s, 0.0).pvalue)
  return Difference(float(s.mean()) if s.size else 0.0, lo, hi, p,
                    int(s.size), True)


def unpaired_trend(accs: Sequence[float], ns: Sequence[int],
                   bits: Sequence[float], *,
                   alpha: float = ALPHA) -> Difference:
  """The same slope from accuracies alone (independent binomial errors)."""
  w = _slope_weights(bits)
  p_hat = np.clip(np.asarray(accs, np.float64), 0.0, 1.0)
  ns = np.asarray(ns, np.float64)
  slope = float(w @ p_hat)
  # Plus-four style floor so that 0 % / 100 % cells still carry variance.
  p_var = (p_hat * ns + 2) / (ns + 4)
  se = float(np.sqrt(np.sum(w * w * p_var * (1 - p_var) / ns)))
  z = sp_stats.norm.ppf(1 - alpha / 2)
  p = 1.0 if slope == 0 else float(2 * sp_stats.norm.sf(abs(slope) / se))
  return Difference(slope, slope - z * se, slope + z * se, p,
                    int(ns.min()), False)


def holm(pvalues: Sequence[float], alpha: float = ALPHA) -> np.ndarray:
  """Holm-adjusted p-values, in the input order.

  max over earlier steps of (m - rank) * p, capped at 1 (statsmodels'
  `multipletests(method='holm')`, which the tests compare with; computed
  here because that call runs a full garbage collection each time).
  """
  del alpha  # Adjusted p-values do not depend on it.
  p = np.asarray(pvalues, np.float64)
  m = p.size
  if not m:
    return np.zeros((0,))
  order = np.argsort(p, kind='stable')
  stepped = np.minimum(1.0, np.maximum.accumulate(
      (m - np.arange(m)) * p[order]))
  out = np.empty(m)
  out[order] = stepped
  return out


def holm_levels(pvalues: Sequence[float], alpha: float = ALPHA) -> np.ndarray:
  """The per-comparison level of Holm's step-down: alpha / (m - rank).

  The comparison with the smallest p is judged at alpha / m, the next at
  alpha / (m - 1), ...; intervals are reported at these levels so that an
  interval excluding 0 and an adjusted p below alpha say the same thing.
  """
  p = np.asarray(pvalues, np.float64)
  m = p.size
  levels = np.empty(m)
  levels[np.argsort(p, kind='stable')] = alpha / (m - np.arange(m))
  return levels
