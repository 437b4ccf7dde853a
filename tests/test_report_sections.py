"""The report's sections: one unit (percent, one decimal), one sign (a drop
is positive when accuracy falls), corruption means without severity 0, the
defenses' claims under the verdict rules, and the files write_report
writes."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from robustmq_jax.reporting import adversarial
from robustmq_jax.reporting import amplification
from robustmq_jax.reporting import clean
from robustmq_jax.reporting import corruption
from robustmq_jax.reporting import defenses
from robustmq_jax.reporting import format as fmt
from robustmq_jax.reporting import report
from robustmq_jax.reporting import systematic
from robustmq_jax.results import outcomes


def _row(precision, suite, noise, acc, params=None, *, method=None, n=200,
         model='m', **extra):
  return dict(dataset='sample', model=model, precision=precision,
              method=method or ('float' if precision == 'fp32' else 'lsq'),
              suite=suite, noise=noise, params=params or {}, seed=0, n=n,
              accuracy=acc, **extra)


def test_percent_one_decimal_and_no_negative_zero():
  assert fmt.pct(0.7125) == '71.2' or fmt.pct(0.7125) == '71.3'
  assert fmt.pct(0.71349) == '71.3'
  assert fmt.pct(-0.0001) == '0.0' and fmt.pct(-0.0001, True) == '0.0'
  assert fmt.pct(0.05, True) == '+5.0' and fmt.pct(-0.05, True) == '-5.0'
  assert fmt.pct(None) == fmt.MISSING and fmt.pct(float('nan')) == (
      fmt.MISSING)
  # A drop is positive when accuracy falls, negative when it rises.
  assert fmt.drop(0.9, 0.8) == '10.0' and fmt.drop(0.8, 0.9) == '-10.0'
  assert fmt.drop(0.5, 0.5 + 1e-9) == '0.0'
  assert fmt.number(-0.0001) == '0.00'


def test_precision_order_and_wilson():
  assert sorted(['w2a2', 'fp32', 'w8a8', 'w4a4:dq'],
                key=fmt.precision_order) == ['fp32', 'w8a8', 'w4a4:dq',
                                             'w2a2']
  lo, hi = fmt.wilson(0.5, 100)
  assert lo < 0.5 < hi and fmt.wilson_pct(0.5, 100) == (
      f'[{fmt.pct(lo)}, {fmt.pct(hi)}]')


def test_clean_section_units_and_drop_sign():
  rows = [_row('fp32', 'clean', 'none', 0.9),
          _row('w4a4', 'clean', 'none', 0.85, accuracy_int8=0.849),
          _row('w8a8', 'clean', 'none', 0.91)]
  md = clean.section(rows).markdown()
  assert '| m | w4a4 | lsq | 200 | 85.0 |' in md
  line = {l.split(' | ')[1]: l for l in md.splitlines()
          if l.startswith('| m |')}
  assert line['w4a4'].endswith('| 84.9 | 5.0 |')  # Fell 5 points.
  assert line['w8a8'].endswith('| -1.0 |')  # Rose 1 point.
  assert '0.85' not in md and '-0.0' not in md
  assert clean.section([]) is None


def _corruption_rows():
  rows = []
  for prec, base in (('fp32', 0.9), ('w4a4', 0.8)):
    rows.append(_row(prec, 'corruption', 'none', base,
                     {'severity': 0, 'table': '32'}))
    for name in ('fog', 'contrast', 'saturate'):
      for sev in (1, 2):
        rows.append(_row(prec, 'corruption', name, base - 0.1 * sev,
                         {'severity': sev, 'table': '32'}))
  return rows


def test_corruption_mean_excludes_severity_zero_and_states_n():
  rows = _corruption_rows()
  groups = corruption.collect(rows)
  cell = groups[('sample', (('table', '32'),))][('m', 'fp32')]
  mean, cells = corruption.mean_accuracy(cell)
  assert cells == 6 and mean == pytest.approx(0.75)  # (0.8 + 0.7) / 2.
  mean15, cells15 = corruption.mean_accuracy(cell, ('fog', 'contrast'))
  assert cells15 == 4 and mean15 == pytest.approx(0.75)
  md = corruption.section(rows).markdown()
  line = next(l for l in md.splitlines() if l.startswith('| m | w4a4'))
  # n, clean, mean (15), cells (15), drop (15), mean (all), cells (all).
  assert line.startswith('| m | w4a4 | 200 | 80.0 | 65.0 | 4 | 15.0 | 65.0 '
                         '| 6 |')
  assert 'severity 0, is never one' in md
  assert 'drop 15.0)' in md  # fog / contrast: 80 - 65, positive.
  assert '-0.0' not in md and corruption.section([]) is None


def test_corruption_ce_normalised_by_fp32_and_alexnet():
  md = corruption.section(_corruption_rows()).markdown()
  fp32 = next(l for l in md.splitlines() if l.startswith('| m | fp32'))
  assert fp32.endswith('| 100.0 | 100.0 |')  # Own normaliser: mCE 100.
  rows = [dict(r, dataset='imagenet2012',
               params=dict(r['params'], table='224'))
          for r in _corruption_rows()]
  assert 'AlexNet' in corruption.section(rows).markdown()


def test_adversarial_section_units_and_masking():
  rows = [_row('fp32', 'adversarial', 'pgd_linf', 0.25,
               {'eps': 2 / 255, 'eps_255': 2.0}, masking_flag=False,
               zero_grad_fraction=0.0),
          _row('w4a4', 'adversarial', 'pgd_linf', 0.5,
               {'eps': 2 / 255, 'eps_255': 2.0}, masking_flag=True,
               accuracy_transfer=0.2),
          _row('w4a4', 'adversarial', 'square', 0.1,
               {'eps': 2 / 255, 'eps_255': 2.0})]
  md = adversarial.section(rows).markdown()
  assert '| m | w4a4 | lsq | pgd_linf | 2/255 | 200 | 50.0 |' in md
  assert '| 20.0 |' in md and 'Possible gradient masking' in md
  assert 'm w4a4: Square 10.0% below white-box 50.0%' in md
  assert 'masked' in md
  assert adversarial.section([]) is None
  assert 'No gradient-masking flag' in adversarial.section(
      rows[:1]).markdown()


def test_adversarial_section_notes_accuracy_rising_with_budget():
  def fgsm(acc, eps, precision='w6a6'):
    return _row(precision, 'adversarial', 'fgsm', acc,
                {'eps': eps / 255, 'eps_255': eps}, n=64)
  # The DoReFa w6a6 twin of the paper grid: FGSM's single step overshoots.
  rows = [fgsm(0.891, 0.5), fgsm(0.781, 1), fgsm(0.844, 2), fgsm(0.953, 4),
          fgsm(1.0, 0.5, 'fp32'), fgsm(0.969, 2, 'fp32'),
          fgsm(0.97, 4, 'fp32')]  # +0.1 points: within the margin.
  notes = adversarial.rising_with_budget(rows)
  assert notes == ['m w6a6 fgsm: 95.3% at ε=4/255, above 78.1% at ε=1/255']
  md = adversarial.section(rows).markdown()
  assert 'Accuracy rising with the budget' in md and notes[0] in md
  monotone = [fgsm(0.9, 1), fgsm(0.5, 2), fgsm(0.5, 4)]
  assert not adversarial.rising_with_budget(monotone)
  assert 'rising' not in adversarial.section(monotone).markdown()


def test_systematic_section_ranks_and_drops():
  rows = []
  for d, base in (('pil', 0.9), ('opencv', 0.88)):
    for m in ('pil_bilinear', 'pil_nearest', 'cv2_area'):
      acc = base - (0.2 if 'nearest' in m else 0.0) + (
          0.01 if m == 'cv2_area' else 0.0)
      rows.append(_row('fp32', 'systematic', m, acc,
                       {'decoder': d, 'protocol': 'imagenet',
                        'resize_to': 36, 'crop': 32}))
  s = systematic.grid_stats(rows)
  assert s['ref'] == pytest.approx(0.9) and s['most_harmful'] == (
      'pil_nearest') and s['least_harmful'] == 'cv2_area'
  md = systematic.section(rows).markdown()
  assert '**pil_nearest**' in md and '| pil | 70.0 | 90.0 | 91.0 |' in md
  # Largest drop vs the reference pipeline: 90 - 68 = 22 points, positive.
  assert 'largest 22.0 (opencv + pil_nearest)' in md
  assert systematic.section([]) is None


def _hits(acc, n=400, seed=0):
  hits = np.zeros(n, bool)
  hits[:round(acc * n)] = True
  return np.random.default_rng(seed).permutation(hits)


def _defense_rows(n, paired):
  table = {  # clean, pgd 2/255, pgd 8/255, autoattack, head gain
      ('fp32', 'float'): (0.90, 0.50, 0.0, 0.0, 5.0),
      ('w4a4:lsq', 'lsq'): (0.88, 0.40, 0.0, 0.0, 7.0),
      ('w4a4', 'ptq'): (0.89, 0.45, 0.0, 0.0, 6.0),
      ('w4a4:dq', 'dq'): (0.89, 0.60, 0.1, 0.05, 4.0),
      ('fp32:adv', 'adv'): (0.85, 0.80, 0.6, 0.55, 2.0),
      ('w4a4:adv_ptq', 'adv_ptq'): (0.80, 0.70, 0.5, 0.45, 2.5),
      ('w4a4:laaq', 'laaq'): (0.82, 0.72, 0.52, 0.46, 2.4),
  }
  rows = []

  def add(p, m, suite, noise, acc, params=None, **extra):
    r = _row(p, suite, noise, acc, params, method=m, n=n, **extra)
    if paired:
      r['outcomes'] = outcomes.encode(np.arange(n), _hits(acc, n))
      r['accuracy'] = round(acc * n) / n
    rows.append(r)

  for (p, m), (c, p2, p8, aa, gain) in table.items():
    add(p, m, 'clean', 'none', c)
    add(p, m, 'adversarial', 'pgd_linf', p2, {'eps_255': 2.0},
        accuracy_transfer=p2 + 0.1)
    add(p, m, 'adversarial', 'pgd_linf', p8, {'eps_255': 8.0})
    add(p, m, 'adversarial', 'autoattack', aa, {'eps_255': 8.0})
    add(p, m, 'corruption', 'fog', c - 0.1, {'severity': 1})
    add(p, m, 'corruption', 'none', c, {'severity': 0})
    add(p, m, 'amplification', 'amplification_pgd_float', 0.1,
        gain_logits=gain)
  return rows


def _claims(md):
  return {l.split(':')[0]: l for l in md.splitlines() if l.startswith('- ')}


def test_defense_claims_follow_the_verdict_rules():
  md = defenses.section(_defense_rows(400, paired=True)).markdown()
  assert '| w4a4 | DQ | 89.0 | 60.0 | 10.0 | 5.0 |' in md
  assert '| fp32 | float | 90.0 |' in md and 'mean corruption' in md
  lines = _claims(md)
  # 60.0 vs 40.0 on 400 examples: a clear effect.
  assert '**held**' in lines['- DQ models are more robust than vanilla '
                             'quantized']
  assert 'w4a4 PGD 2/255: DQ vs vanilla: 60.0 vs 40.0, diff +20.0' in md
  # Ties (0 vs 0 under PGD 8/255 and AutoAttack) are inconclusive, never
  # held / did not hold.
  tie = next(l for l in md.splitlines()
             if 'w4a4 PGD 8/255: float vs vanilla' in l)
  assert tie.endswith('inconclusive')
  assert 'no verdict' in lines['- error amplification']
  loss = lines['- adversarially trained models lose more clean accuracy to '
               'quantization than plainly trained ones']
  assert 'not evaluated' not in loss
  assert defenses.section([r for r in _defense_rows(400, True)
                           if ':' not in r['precision']]) is None


def test_defense_claims_on_few_examples_are_inconclusive():
  md = defenses.section(_defense_rows(10, paired=False)).markdown()
  for text, line in _claims(md).items():
    if 'not evaluated' in line or 'no verdict' in line:
      continue
    assert '**inconclusive**' in line, text


def test_amplification_section():
  rows = [_row(p, 'amplification', 'amplification_pgd_float', 0.5,
               {'eps_255': 2.0}, layers=['conv1', 'fc'],
               gain={'conv1': 1.0, 'fc': g}, gain_logits=g)
          for p, g in (('fp32', 2.0), ('w4a4', 3.0))]
  md = amplification.section(rows).markdown()
  assert '| w4a4 (lsq) | 50.0 | 1.00 | 3.00 | 1.50 |' in md
  assert amplification.section([]) is None


def test_write_report_files_csv_and_units(tmp_path):
  rows = (_corruption_rows() + [_row('fp32', 'clean', 'none', 0.9),
                                _row('w4a4', 'clean', 'none', 0.8)])
  rows[0]['outcomes'] = outcomes.encode(np.arange(200), _hits(0.9, 200))
  path = report.write_report(str(tmp_path), rows, examples=False)
  md = open(path).read()
  for f in ('report.md', 'report.html', 'findings.json', 'results.csv'):
    assert os.path.exists(tmp_path / f), f
  assert {'bits_m.png', 'corruption_m.png'} <= set(
      os.listdir(tmp_path / 'plots'))
  with open(tmp_path / 'results.csv') as f:
    header = next(csv.reader(f))
  assert 'outcomes' not in header and 'accuracy' in header
  assert '## Paper findings checked' in md and '-0.0' not in md
  assert 'ids_to' not in md and '0.9000' not in md
  result = json.load(open(tmp_path / 'findings.json'))
  assert [f['id'] for f in result['findings']] == ['F1', 'F2', 'F3', 'F4']


def test_reporting_imports_no_suite():
  code = ('import sys, robustmq_jax.reporting.report, '
          'robustmq_jax.reporting.html, robustmq_jax.reporting.examples; '
          'bad = [m for m in sys.modules '
          "if m.startswith('robustmq_jax.suites')]; assert not bad, bad")
  subprocess.run([sys.executable, '-c', code], check=True)


def test_make_report_script_regenerates_every_file(tmp_path):
  rows = [_row('fp32', 'clean', 'none', 0.9), _row('w4a4', 'clean', 'none',
                                                   0.8)]
  dirs = [tmp_path / 'a', tmp_path / 'b']
  for d in dirs:
    d.mkdir()
    (d / 'results.jsonl').write_text(
        ''.join(json.dumps(r) + '\n' for r in rows))
  script = os.path.join(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))), 'scripts', 'make_report.py')
  subprocess.run([sys.executable, script] +
                 [f'--workdir={d}' for d in dirs], check=True,
                 capture_output=True)
  # Several workdirs make one merged report, in the first by default.
  for f in ('report.md', 'report.html', 'findings.json', 'results.csv'):
    assert (dirs[0] / f).exists(), f
    assert not (dirs[1] / f).exists(), f


def test_a_float_only_clean_run_still_gets_a_plot(tmp_path):
  report.write_report(str(tmp_path), [_row('fp32', 'clean', 'none', 0.9)],
                      examples=False)
  assert os.listdir(tmp_path / 'plots') == ['bits_m.png']
