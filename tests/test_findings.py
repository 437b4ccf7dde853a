"""The verdict rules on synthetic rows (reporting.findings / verdicts)."""

import json

import numpy as np
import pytest

from robustmq_jax.reporting import findings
from robustmq_jax.reporting import findings_text
from robustmq_jax.reporting import verdicts
from robustmq_jax.results import outcomes

N = 400


def _hits(acc: float, seed: int, n: int = N) -> np.ndarray:
  """Exactly round(acc * n) correct examples, in a seeded order."""
  hits = np.zeros(n, bool)
  hits[:round(acc * n)] = True
  return np.random.default_rng(seed).permutation(hits)


def _row(precision, method, suite, noise, hits, *, params=None,
         paired=True, model='m', **extra):
  row = {'dataset': 'd', 'model': model, 'precision': precision,
         'method': method, 'suite': suite, 'noise': noise,
         'params': params or {}, 'seed': 0, 'n': int(hits.size),
         'accuracy': float(hits.mean())}
  if paired:
    row['outcomes'] = outcomes.encode(np.arange(hits.size), hits)
  row.update(extra)
  return row


def _adv(precision, method, hits, eps=1.0, **kw):
  return _row(precision, method, 'adversarial', 'pgd_linf', hits,
              params={'eps': eps / 255, 'eps_255': eps}, **kw)


def _finding(result, fid):
  return next(f for f in result['findings'] if f['id'] == fid)


def _shared(base: np.ndarray, flip: int, seed: int) -> np.ndarray:
  """`base` with `flip` wrong examples made right (paired, one-sided)."""
  out = base.copy()
  wrong = np.flatnonzero(~out)
  out[np.random.default_rng(seed).choice(wrong, flip, replace=False)] = True
  return out


def test_clear_adversarial_gain_holds_and_a_clear_loss_does_not():
  fp = _hits(0.3, 0)
  rows = [_adv('fp32', 'float', fp), _adv('w4a4', 'lsq', _shared(fp, 60, 1))]
  f1 = _finding(findings.evaluate(rows), 'F1')
  assert [c['outcome'] for c in f1['comparisons']] == ['held']
  assert f1['verdict'] == 'held' and f1['comparisons'][0]['paired']
  rows = [_adv('fp32', 'float', _shared(fp, 60, 1)), _adv('w4a4', 'lsq', fp)]
  f1 = _finding(findings.evaluate(rows), 'F1')
  assert f1['verdict'] == 'did_not_hold'
  assert f1['comparisons'][0]['diff'] == pytest.approx(-60 / N)


def test_ties_and_small_differences_are_inconclusive():
  fp = _hits(0.5, 0)
  tie = [_adv('fp32', 'float', fp), _adv('w4a4', 'lsq', fp.copy())]
  c = _finding(findings.evaluate(tie), 'F1')['comparisons'][0]
  assert c['outcome'] == 'inconclusive' and c['diff'] == 0 and c['p'] == 1
  # Two examples of difference on 400: the interval overlaps 0.
  small = [_adv('fp32', 'float', fp), _adv('w4a4', 'lsq', _shared(fp, 2, 1))]
  f1 = _finding(findings.evaluate(small), 'F1')
  assert f1['comparisons'][0]['outcome'] == 'inconclusive'
  assert f1['comparisons'][0]['ci_low'] <= 0 <= f1['comparisons'][0]['ci_high']
  assert f1['verdict'] == 'inconclusive'
  # A clear effect on too few examples is inconclusive too.
  few = _hits(0.1, 0, n=20)
  rows = [_adv('fp32', 'float', few), _adv('w4a4', 'lsq', ~few)]
  c = _finding(findings.evaluate(rows), 'F1')['comparisons'][0]
  assert c['n'] == 20 < verdicts.MIN_EXAMPLES and c['outcome'] == 'inconclusive'


def test_a_masked_cell_is_masked_and_not_counted():
  fp = _hits(0.3, 0)
  rows = [_adv('fp32', 'float', fp),
          _adv('w4a4', 'lsq', _shared(fp, 60, 1), masking_flag=True)]
  f1 = _finding(findings.evaluate(rows), 'F1')
  assert f1['comparisons'][0]['outcome'] == 'masked'
  assert (f1['masked'], f1['held'], f1['verdict']) == (1, 0, 'inconclusive')


def test_defense_rows_are_not_part_of_f1_f2():
  fp = _hits(0.3, 0)
  better = _shared(fp, 80, 1)
  rows = [_adv('fp32', 'float', fp), _adv('fp32:adv', 'adv', better),
          _adv('w4a4:dq', 'dq', better), _adv('w4a4:laaq', 'laaq', better),
          _adv('w2a2:adv_ptq', 'adv_ptq', better)]
  result = findings.evaluate(rows)
  for fid in ('F1', 'F2'):
    f = _finding(result, fid)
    assert f['comparisons'] == [] and f['verdict'] == 'inconclusive'
    assert f['note'].startswith('not evaluated')


def test_methods_are_not_mixed_in_trends():
  fp = _hits(0.3, 0)
  rows = [_adv('w4a4', 'lsq', fp), _adv('w2a2', 'pact', _shared(fp, 80, 1))]
  assert _finding(findings.evaluate(rows), 'F2')['comparisons'] == []
  rows += [_adv('w8a8', 'lsq', _shared(fp, 1, 2)),
           _adv('w8a8', 'pact', _shared(fp, 3, 2))]
  comps = _finding(findings.evaluate(rows), 'F2')['comparisons']
  assert sorted(c['method'] for c in comps) == ['lsq', 'pact']
  pact = next(c for c in comps if c['method'] == 'pact')
  assert pact['bit_widths'] == [2, 8]


def test_trend_falling_with_bits_holds_for_adversarial_accuracy():
  base = _hits(0.2, 0)
  w8 = base
  w4 = _shared(w8, 40, 1)
  w2 = _shared(w4, 40, 2)
  rows = [_adv('w2a2', 'lsq', w2), _adv('w4a4', 'lsq', w4),
          _adv('w8a8', 'lsq', w8)]
  f2 = _finding(findings.evaluate(rows), 'F2')
  (c,) = f2['comparisons']
  assert c['outcome'] == 'held' and c['diff'] < 0
  assert (c['a'], c['b']) == (w8.mean(), w2.mean())


def _corruption_rows(precision, method, accs, *, model='m', paired=True):
  rows = []
  for i, (name, acc) in enumerate(accs.items()):
    for sev in range(0 if name == 'none' else 1, 1 if name == 'none' else 6):
      rows.append(_row(precision, method, 'corruption', name,
                       _hits(acc, 10 * i + sev),
                       params={'severity': sev, 'table': '224'},
                       model=model, paired=paired))
  return rows


def test_f3_ranks_benchmark_corruptions_only():
  accs = {name: 0.6 for name in findings.BENCHMARK_CORRUPTIONS}
  accs.update(impulse_noise=0.2, glass_blur=0.25, brightness=0.9, none=0.95,
              speckle_noise=0.01, spatter=0.99)
  rows = _corruption_rows('w4a4', 'lsq', accs)
  f3 = _finding(findings.evaluate(rows), 'F3')
  names = {c['noise'] for c in f3['comparisons']} | {
      c['other'] for c in f3['comparisons']}
  assert names == set(findings.BENCHMARK_CORRUPTIONS)
  assert 'none' not in names and 'speckle_noise' not in names
  assert f3['verdict'] == 'held' and f3['did_not_hold'] == 0
  # 2 x 13 "most harmful" + 14 "least harmful" comparisons.
  assert len(f3['comparisons']) == 40
  ranked = [r['corruption'] for r in f3['ranking'] if r['rank']]
  assert ranked[:2] == ['impulse_noise', 'glass_blur']
  assert ranked[-1] == 'brightness' and len(ranked) == 15
  assert {r['corruption'] for r in f3['ranking'] if not r['rank']} == {
      'speckle_noise', 'spatter'}


def test_f1_corruption_mean_excludes_severity_zero_and_extras():
  fp = _corruption_rows('fp32', 'float', {'none': 0.0, 'fog': 0.5,
                                          'spatter': 1.0})
  q = _corruption_rows('w4a4', 'lsq', {'none': 1.0, 'fog': 0.5,
                                       'spatter': 0.0})
  f1 = _finding(findings.evaluate(fp + q), 'F1')
  (c,) = f1['comparisons']
  assert c['family'] == 'corruption' and c['cells'] == 5
  assert c['diff'] == pytest.approx(0.0) and c['outcome'] == 'inconclusive'


def test_f4_follows_the_paper_wording():
  accs = {m: 0.7 for m in ('pil_nearest', 'cv2_nearest', 'pil_bilinear',
                           'cv2_linear', 'pil_bicubic', 'cv2_cubic',
                           'cv2_area', 'pil_box', 'pil_lanczos')}
  accs.update(pil_nearest=0.3, cv2_nearest=0.35, pil_bilinear=0.9,
              cv2_linear=0.9, pil_bicubic=0.92, cv2_cubic=0.91, cv2_area=0.9)
  rows = [_row('w4a4', 'lsq', 'systematic', m, _hits(a, i),
               params={'decoder': 'pil'}) for i, (m, a) in
          enumerate(accs.items())]
  f4 = _finding(findings.evaluate(rows), 'F4')
  assert f4['verdict'] == 'held' and f4['did_not_hold'] == 0
  # 2 nearest x 7 others + 5 mild x 2 (box, lanczos).
  assert len(f4['comparisons']) == 2 * 7 + 5 * 2
  rows[0]['accuracy'] = 0.99  # Unpaired now: one row without outcomes.
  rows[0].pop('outcomes')
  rows[0] = dict(rows[0], accuracy=0.99)
  f4 = _finding(findings.evaluate(rows), 'F4')
  assert f4['verdict'] == 'did_not_hold'
  assert not all(c['paired'] for c in f4['comparisons'])


def test_unpaired_cells_on_different_examples_are_inconclusive():
  rows = [_adv('fp32', 'float', _hits(0.1, 0, n=100), paired=False),
          _adv('w4a4', 'lsq', _hits(0.9, 1, n=300), paired=False)]
  c = _finding(findings.evaluate(rows), 'F1')['comparisons'][0]
  assert c['outcome'] == 'inconclusive' and 'different examples' in c['note']


def test_counts_equal_tallies_and_json_and_markdown_agree(tmp_path):
  fp = _hits(0.3, 0)
  rows = [_adv('fp32', 'float', fp), _adv('w4a4', 'lsq', _shared(fp, 60, 1)),
          _adv('w2a2', 'lsq', fp.copy()),
          _adv('w2a2', 'lsq', _shared(fp, 60, 3), eps=2.0, masking_flag=True),
          _adv('fp32', 'float', fp, eps=2.0)]
  result = findings.evaluate(rows)
  path = findings.write_json(str(tmp_path), result)
  loaded = json.load(open(path))
  md = findings_text.markdown(loaded)
  for f in loaded['findings']:
    for o in ('held', 'did_not_hold', 'inconclusive', 'masked'):
      assert f[o] == sum(c['outcome'] == o for c in f['comparisons'])
    assert f['verdict'] in ('held', 'did_not_hold', 'inconclusive')
    for c in f['comparisons']:
      for k in ('what', 'method', 'a', 'b', 'diff', 'ci_low', 'ci_high', 'p',
                'n', 'outcome'):
        assert k in c
  f1 = _finding(loaded, 'F1')
  assert (f1['held'], f1['inconclusive'], f1['masked']) == (1, 1, 1)
  assert '1 held, 0 did not hold, 1 inconclusive of 2 counted' in md
  assert '-0.0' not in md


def test_a_rerun_row_replaces_the_older_one_with_the_same_key():
  fp = _hits(0.3, 0)
  old = _adv('w4a4', 'lsq', fp)
  new = _adv('w4a4', 'lsq', _shared(fp, 60, 1))
  rows = [_adv('fp32', 'float', fp), old, new]
  (c,) = _finding(findings.evaluate(rows), 'F1')['comparisons']
  assert c['a'] == pytest.approx(new['accuracy'])


def test_a_repointed_checkpoint_counts_once_and_is_reported_as_mixed():
  fp = _hits(0.3, 0)
  old = _adv('w4a4', 'lsq', fp, weights={'float': 'aaa'})
  new = _adv('w4a4', 'lsq', _shared(fp, 60, 1), weights={'float': 'bbb'})
  rows = [_adv('fp32', 'float', fp, weights={'float': 'aaa'}), old, new]
  result = findings.evaluate(rows)
  (c,) = _finding(result, 'F1')['comparisons']
  assert c['a'] == pytest.approx(new['accuracy'])
  assert result['mixed_weights'] == {'m': ['aaa', 'bbb']}
  assert 'Mixed weights' in findings_text.markdown(result)
