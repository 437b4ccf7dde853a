"""reporting.stats against scipy / statsmodels and textbook formulas."""

import math

import numpy as np
import pytest
from scipy import stats as sp_stats
from statsmodels.stats.contingency_tables import mcnemar

from robustmq_jax.reporting import stats
from robustmq_jax.results import outcomes


def _wilson_formula(k, n, z=1.959963984540054):
  # REFERENCE.md §14.
  centre = (k + z * z / 2) / (n + z * z)
  half = z * math.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
  return centre - half, centre + half


@pytest.mark.parametrize('k,n', [(0, 10), (7, 10), (64, 64), (137, 200)])
def test_wilson_matches_the_closed_form(k, n):
  np.testing.assert_allclose(stats.wilson(k, n), _wilson_formula(k, n),
                             atol=1e-12)


def test_mcnemar_exact_matches_statsmodels():
  rng = np.random.default_rng(0)
  a = rng.random(300) < 0.7
  b = np.where(rng.random(300) < 0.15, ~a, a)  # 15 % of pairs disagree.
  b01 = int(np.sum(a & ~b))
  b10 = int(np.sum(~a & b))
  table = [[int(np.sum(a & b)), b01], [b10, int(np.sum(~a & ~b))]]
  want = mcnemar(table, exact=True).pvalue
  assert stats.mcnemar_exact(a, b) == pytest.approx(want, rel=1e-12)
  assert b01 + b10 > 20  # The test is not degenerate.


def test_mcnemar_of_identical_outcomes_is_one():
  a = np.array([True, False, True])
  assert stats.mcnemar_exact(a, a) == 1.0


def test_paired_bootstrap_matches_scipy_within_monte_carlo_error():
  rng = np.random.default_rng(1)
  a = rng.random(400) < 0.8
  b = rng.random(400) < 0.7
  d = stats.paired_difference(a, b, seed=3)
  ref = sp_stats.bootstrap(
      (a.astype(float), b.astype(float)),
      lambda x, y, axis=-1: x.mean(axis) - y.mean(axis), paired=True,
      method='percentile', n_resamples=20_000, rng=np.random.default_rng(4))
  assert d.diff == pytest.approx(a.mean() - b.mean())
  # Monte-Carlo error of a 2.5 % quantile with 10-20 k resamples: ~0.003.
  assert d.ci_low == pytest.approx(ref.confidence_interval.low, abs=0.01)
  assert d.ci_high == pytest.approx(ref.confidence_interval.high, abs=0.01)
  assert d.paired and d.n == 400


def test_newcombe_interval_matches_the_hybrid_score_formula():
  ka, na, kb, nb = 45, 64, 30, 64
  d = stats.unpaired_difference(ka / na, na, kb / nb, nb)
  la, ua = _wilson_formula(ka, na)
  lb, ub = _wilson_formula(kb, nb)
  pa, pb = ka / na, kb / nb
  lo = pa - pb - math.sqrt((pa - la) ** 2 + (ub - pb) ** 2)
  hi = pa - pb + math.sqrt((ua - pa) ** 2 + (pb - lb) ** 2)
  assert (d.ci_low, d.ci_high) == pytest.approx((lo, hi), abs=1e-9)
  assert 0 < d.p < 0.05 and not d.paired


def test_holm_matches_the_step_down_rule():
  p = [0.01, 0.04, 0.03, 0.005]
  # Sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1 -> max so far.
  want = [0.03, 0.06, 0.06, 0.02]
  np.testing.assert_allclose(stats.holm(p), want, atol=1e-12)
  np.testing.assert_allclose(stats.holm_levels(p, 0.05),
                             [0.05 / 3, 0.05 / 1, 0.05 / 2, 0.05 / 4])


def test_paired_trend_of_two_bit_widths_is_their_difference():
  rng = np.random.default_rng(2)
  lo_bits = rng.random(200) < 0.6
  hi_bits = rng.random(200) < 0.75
  t = stats.paired_trend(np.stack([lo_bits, hi_bits], 1), [0.0, 1.0])
  d = stats.paired_difference(hi_bits, lo_bits)
  assert t.diff == pytest.approx(d.diff)
  # The per-example slopes are the per-example differences: same t-test.
  want = sp_stats.ttest_1samp(hi_bits.astype(float) - lo_bits, 0.0).pvalue
  assert t.p == pytest.approx(want)


def test_trend_slope_equals_least_squares_on_the_means():
  rng = np.random.default_rng(5)
  scores = rng.random((100, 4)) < np.array([0.5, 0.6, 0.65, 0.8])
  bits = [2, 4, 6, 8]
  t = stats.paired_trend(scores, bits)
  slope = np.polyfit(bits, scores.mean(0), 1)[0]
  assert t.diff == pytest.approx(slope)
  u = stats.unpaired_trend(scores.mean(0), [100] * 4, bits)
  assert u.diff == pytest.approx(slope) and u.ci_low < slope < u.ci_high


def test_outcomes_round_trip_and_alignment():
  ids = np.array([7, 2, 40, 3])
  correct = np.array([True, False, True, True])
  enc = outcomes.encode(ids, correct)
  got_ids, got = outcomes.decode({'outcomes': enc})
  np.testing.assert_array_equal(got_ids, [2, 3, 7, 40])
  np.testing.assert_array_equal(got, [False, True, True, True])
  full = outcomes.encode(np.arange(5), np.array([1, 0, 1, 1, 0], bool))
  assert 'ids' not in full  # 0..N-1 needs no membership bitset.
  common, hits = outcomes.aligned([{'outcomes': enc}, {'outcomes': full}])
  np.testing.assert_array_equal(common, [2, 3])
  np.testing.assert_array_equal(hits, [[False, True], [True, True]])
  assert outcomes.aligned([{'outcomes': enc}, {'accuracy': 0.5}]) is None


def test_holm_matches_statsmodels_and_sign_test_matches_binomtest():
  from statsmodels.stats import multitest  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(7)
  # (statsmodels' multipletests runs a full gc.collect per call: few calls.)
  for _ in range(4):
    p = rng.random(rng.integers(1, 40)) ** 3
    np.testing.assert_allclose(
        stats.holm(p), multitest.multipletests(p, method='holm')[1])
  for pos, neg in ((0, 5), (3, 9), (12, 12), (40, 21), (1, 0)):
    d = np.array([1] * pos + [-1] * neg + [0] * 4)
    assert stats.sign_test(d) == pytest.approx(
        sp_stats.binomtest(pos, pos + neg, 0.5).pvalue, rel=1e-12)


def test_far_tail_intervals_use_the_bootstrap_normal_limit():
  rng = np.random.default_rng(3)
  d = (rng.random(500) < 0.6).astype(float) - (rng.random(500) < 0.5)
  alpha = 0.05 / 200  # A Holm level: 1.25 resamples in each tail.
  lo, hi = stats.bootstrap_mean_interval(d, alpha=alpha)
  half = sp_stats.norm.ppf(1 - alpha / 2) * d.std() / math.sqrt(d.size)
  assert (lo, hi) == pytest.approx((d.mean() - half, d.mean() + half))
  # At 95 % the percentile bootstrap and its normal limit nearly agree.
  lo95, hi95 = stats.bootstrap_mean_interval(d)
  half95 = 1.96 * d.std() / math.sqrt(d.size)
  assert lo95 == pytest.approx(d.mean() - half95, abs=0.01)
  assert hi95 == pytest.approx(d.mean() + half95, abs=0.01)


def test_far_tail_normal_limit_stays_within_the_values_range():
  """A difference of accuracies cannot pass -100 points, at any level."""
  d = np.array([-1.0] * 61 + [0.0] * 3)  # 61 of 64 examples flipped
  lo, hi = stats.bootstrap_mean_interval(d, alpha=0.05 / 200)
  half = sp_stats.norm.ppf(1 - 0.05 / 400) * d.std() / math.sqrt(d.size)
  assert d.mean() - half < -1.0  # the unclipped limit would pass -100
  assert lo == -1.0
  assert hi == pytest.approx(d.mean() + half)
