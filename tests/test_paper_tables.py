"""The paper tables (one per architecture, RobustMQ's layout) on synthetic
rows whose every number is known, and their place in report.md / .html."""

import numpy as np
import pytest

from robustmq_jax.reporting import paper_tables
from robustmq_jax.reporting import report

# (precision, method) -> clean accuracy; the grid of configs/robustmq.py
# plus a defense row that must stay out.
_WHO = {('fp32', 'float'): 0.90, ('w2a2:pact', 'pact'): 0.60,
        ('w4a4:pact', 'pact'): 0.80, ('w4a4:lsq', 'lsq'): 0.85,
        ('w4a4:dq', 'dq'): 0.70}


def _row(model, precision, method, suite, noise, acc, params=None):
  return dict(dataset='sample', model=model, precision=precision,
              method=method, suite=suite, noise=noise, params=params or {},
              seed=0, n=64, accuracy=acc)


def _rows(model='resnet20_cifar'):
  rows = []
  for (prec, method), clean in _WHO.items():
    def add(suite, noise, acc, params=None):
      rows.append(_row(model, prec, method, suite, noise, acc, params))
    add('clean', 'none', clean)
    # Budgets listed out of order: the table orders them 1, 2.
    add('adversarial', 'fgsm', clean - 0.2, {'eps': 2 / 255, 'eps_255': 2.0})
    add('adversarial', 'fgsm', clean - 0.1, {'eps': 1 / 255, 'eps_255': 1.0})
    add('adversarial', 'pgd_l2', clean - 0.3, {'eps': 0.25})
    # Severity 0 and an extra corruption: never in the mean over the 15.
    add('corruption', 'none', 0.01, {'severity': 0, 'table': '32'})
    add('corruption', 'spatter', 0.01, {'severity': 1, 'table': '32'})
    for sev in (1, 2):
      add('corruption', 'fog', clean - 0.1 * sev,
          {'severity': sev, 'table': '32'})
      add('corruption', 'contrast', clean - 0.2 * sev,
          {'severity': sev, 'table': '32'})
    for i, decoder in enumerate(('pil', 'ffmpeg')):
      for j, resize in enumerate(('pil_bilinear', 'cv2_nearest')):
        add('systematic', resize, clean - 0.1 * i - 0.2 * j,
            {'decoder': decoder, 'resize_to': 32})
  return rows


def _cells(table):
  return {(r[0], r[1]): dict(zip(table.header, r)) for r in table.rows}


def test_one_table_per_architecture_rows_float_then_method_by_bits():
  found = paper_tables.tables(_rows('resnet20_cifar') +
                              _rows('regnetx_cifar'))
  assert [t for t, _ in found] == ['regnetx_cifar (sample)',
                                   'resnet20_cifar (sample)']
  table = found[1][1]
  # Float first; methods in the paper's order; fewest bits first; no DQ.
  assert [(r[0], r[1]) for r in table.rows] == [
      ('float', '32/32'), ('PACT', '2/2'), ('PACT', '4/4'), ('LSQ', '4/4')]
  assert table.header == [
      'method', 'W/A bits', 'clean %', 'FGSM 1 / 2 /255 %', 'PGD L2 0.25 %',
      'corruption mean (2 of 15) %', 'mCE %', 'systematic mean ± std %']


def test_every_attack_of_the_paper_grid_has_its_column_in_order():
  rows = _rows()
  # The paper grid's other three attacks, added after the first two: the
  # columns follow the suite's family order, not the rows'.
  for prec, method in _WHO:
    rows += [
        _row('resnet20_cifar', prec, method, 'adversarial', 'autoattack',
             0.1, {'eps': 4 / 255, 'eps_255': 4.0}),
        _row('resnet20_cifar', prec, method, 'adversarial', 'pgd_l1', 0.2,
             {'eps': 12.0}),
        _row('resnet20_cifar', prec, method, 'adversarial', 'pgd_linf', 0.3,
             {'eps': 4 / 255, 'eps_255': 4.0})]
  # All 15 benchmark corruptions (at one severity): the header says 15.
  for name in paper_tables.metrics.BENCHMARK:
    rows.append(_row('resnet20_cifar', 'fp32', 'float', 'corruption', name,
                     0.5, {'severity': 1, 'table': '32'}))
  (_, table), = paper_tables.tables(rows)
  assert table.header == [
      'method', 'W/A bits', 'clean %', 'FGSM 1 / 2 /255 %', 'PGD L∞ 4 /255 %',
      'PGD L2 0.25 %', 'PGD L1 12 %', 'AutoAttack 4 /255 %',
      'corruption mean (15) %', 'mCE %', 'systematic mean ± std %']
  assert _cells(table)[('LSQ', '4/4')]['PGD L1 12 %'] == '20.0'


def test_cells_hold_clean_attacks_corruption_and_systematic():
  table = paper_tables.tables(_rows())[0][1]
  cells = _cells(table)
  pact4 = cells[('PACT', '4/4')]
  assert pact4['clean %'] == '80.0'
  assert pact4['FGSM 1 / 2 /255 %'] == '70.0 / 60.0'
  assert pact4['PGD L2 0.25 %'] == '50.0'
  # fog 70, 60; contrast 60, 40 -> 57.5 (spatter and severity 0 left out).
  assert pact4['corruption mean (2 of 15) %'] == '57.5'
  # mCE against fp32 of the same model: sum of errors over sum of fp32's.
  ces = [(0.3 + 0.4) / (0.2 + 0.3), (0.4 + 0.6) / (0.3 + 0.5)]
  assert pact4['mCE %'] == f'{100 * np.mean(ces):.1f}'
  assert cells[('float', '32/32')]['mCE %'] == '100.0'
  grid = np.array([0.8, 0.6, 0.7, 0.5])
  assert pact4['systematic mean ± std %'] == (
      f'{100 * grid.mean():.1f} ± {100 * grid.std():.1f}')


def test_missing_suites_print_a_dash_and_defenses_alone_give_no_section():
  rows = [r for r in _rows() if r['suite'] == 'clean']
  table = paper_tables.tables(rows)[0][1]
  assert table.header[-3:] == ['corruption mean (15) %', 'mCE %',
                               'systematic mean ± std %']
  assert _cells(table)[('LSQ', '4/4')]['mCE %'] == '–'
  only_defense = [r for r in rows if r['method'] == 'dq']
  assert paper_tables.section(only_defense) is None
  assert paper_tables.section([]) is None


def test_unsuffixed_precisions_use_the_row_method():
  rows = [_row('m', 'fp32', 'float', 'clean', 'none', 0.9),
          _row('m', 'w8a8', 'lsq', 'clean', 'none', 0.88),
          _row('m', 'w4a4', 'ptq', 'clean', 'none', 0.5)]
  table = paper_tables.tables(rows)[0][1]
  assert [(r[0], r[1], r[2]) for r in table.rows] == [
      ('float', '32/32', '90.0'), ('PTQ', '4/4', '50.0'),
      ('LSQ', '8/8', '88.0')]


@pytest.mark.parametrize('fmt', ['md', 'html'])
def test_report_has_one_table_per_architecture(tmp_path, fmt):
  rows = _rows('resnet20_cifar') + _rows('mobilenet_v2_cifar')
  report.write_report(str(tmp_path), rows, examples=False)
  text = (tmp_path / f'report.{fmt}').read_text()
  assert 'Paper tables (RobustMQ layout)' in text
  for model in ('resnet20_cifar', 'mobilenet_v2_cifar'):
    assert f'{model} (sample)' in text
  assert text.index('Paper tables') < text.index('Adversarial robustness')
