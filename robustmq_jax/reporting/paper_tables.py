"""The paper's tables: one per architecture, in RobustMQ's layout.

`section(rows)` writes, per (dataset, model), one table whose rows are the
float model and then each quantization method (PTQ, DoReFa, PACT, LSQ) at
each bit width, and whose columns are:

* clean top-1 accuracy;
* one column per attack family; a cell lists the accuracy at each budget
  the header names ("FGSM 1 / 2 /255": two numbers, in that order);
* mean accuracy over the 15 ImageNet-C benchmark corruptions at severities
  1-5 (RobustMQ's natural robustness; the 4 extras and the uncorrupted cell
  are never part of it), and mCE over the same 15 (normaliser as in the
  corruption section: AlexNet on ImageNet-C at 224, else the fp32 model of
  the same architecture, whose mCE is then 100);
* systematic noise: mean ± standard deviation of the accuracy over the
  (decoder, resize) cells.

Defense rows (`fp32:adv`, DQ, LAAQ, ...) have their own section. The other
sections hold the same numbers with intervals; the findings test them.
"""

import collections
import math
from typing import Any, Mapping, Sequence

from robustmq_jax.corruptions import metrics
from robustmq_jax.reporting import adversarial
from robustmq_jax.reporting import corruption
from robustmq_jax.reporting import findings
from robustmq_jax.reporting import format as fmt
from robustmq_jax.reporting import systematic

METHOD_NAMES = {'float': 'float', 'ptq': 'PTQ', 'dorefa': 'DoReFa',
                'pact': 'PACT', 'lsq': 'LSQ'}
ATTACK_NAMES = {'fgsm': 'FGSM', 'pgd_linf': 'PGD L∞', 'pgd_l2': 'PGD L2',
                'pgd_l1': 'PGD L1', 'apgd_ce': 'APGD-CE',
                'autoattack': 'AutoAttack', 'square': 'Square'}
_METHOD_ORDER = tuple(METHOD_NAMES)


def _who(r: Mapping[str, Any]) -> tuple[str, str] | None:
  """(method, precision) of a paper-grid row; None for defense rows."""
  method, precision = r.get('method', ''), r.get('precision', '')
  if precision == 'fp32' and method == findings.FLOAT_METHOD:
    return method, precision
  if method in findings.QUANT_METHODS and findings.bits_of(precision):
    return method, precision
  return None


def _order(who: tuple[str, str]) -> tuple:
  method, precision = who
  return (_METHOD_ORDER.index(method), findings.bits_of(precision) or 0,
          precision)


def _bits_text(precision: str) -> str:
  """'w4a4:pact' -> '4/4'; 'w4a16' -> '4/16'."""
  base = precision.split(':', 1)[0]
  digits = ''.join(c if c.isdigit() else ' ' for c in base).split()
  return '/'.join(digits) if base != 'fp32' else '32/32'


def _budget_header(family: str, budgets: Sequence[str]) -> str:
  linf = all(b.endswith('/255') for b in budgets)
  text = (' / '.join(b[:-len('/255')] for b in budgets) + ' /255' if linf
          else ' / '.join(budgets))
  return f'{ATTACK_NAMES.get(family, family)} {text} %'


def _errors(cell: Mapping | None) -> dict[str, dict[int, float]]:
  """{corruption: {severity: top-1 error}} of a corruption-section cell."""
  out = collections.defaultdict(dict)
  for k, r in (cell or {}).items():
    if k != 'clean':
      out[k[0]][k[1]] = 1.0 - float(r['accuracy'])
  return out


def _corruption_stats(
    rows) -> dict[tuple, dict[str, tuple[float, float, int]]]:
  """{(dataset, model): {precision: (mean accuracy (15), mCE, corruptions)}}.

  `corruptions`: how many of the 15 benchmark corruptions the mean covers.
  """
  out: dict[tuple, dict[str, tuple[float, float, int]]] = {}
  for (dataset, setting), models in sorted(corruption.collect(rows).items(),
                                           key=lambda kv: str(kv[0])):
    alexnet = 'imagenet' in dataset.lower() and dict(setting).get(
        'table', '224') == '224'
    for (model, precision), cell in models.items():
      stats = out.setdefault((dataset, model), {})
      if precision in stats:
        continue  # A second corruption setting: the first one is shown.
      mean, count = corruption.mean_accuracy(cell, metrics.BENCHMARK)
      # The corruption section's normaliser: AlexNet on ImageNet-C at 224,
      # else the fp32 model of the same architecture.
      reference = None if alexnet else _errors(models.get((model, 'fp32')))
      errors = _errors(cell)
      stats[precision] = (mean if count else math.nan,
                          metrics.mce(errors, baseline=reference),
                          len(errors.keys() & set(metrics.BENCHMARK)))
  return out


def _systematic_stats(rows) -> dict[tuple, dict[str, tuple[float, float]]]:
  """{(dataset, model): {precision: (grid mean, grid std)}}."""
  out: dict[tuple, dict[str, tuple[float, float]]] = {}
  for (dataset, model, precision, _), group in sorted(
      systematic.groups(rows).items()):
    stats = out.setdefault((dataset, model), {})
    if precision not in stats:
      s = systematic.grid_stats(group)
      stats[precision] = (s['mean'], s['std'])
  return out


def tables(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, fmt.Table]]:
  """[(architecture title, table)], one per (dataset, model)."""
  grid = collections.defaultdict(lambda: collections.defaultdict(list))
  for r in rows:
    who = _who(r)
    if who is not None and 'accuracy' in r:
      grid[(r.get('dataset', ''), r.get('model', ''))][who].append(r)
  corr, syst = _corruption_stats(rows), _systematic_stats(rows)
  out = []
  for arch in sorted(grid):
    by_who = grid[arch]
    attacks = collections.defaultdict(dict)  # family -> {eps text: value}
    for cells in by_who.values():
      for r in cells:
        if r.get('suite') == 'adversarial':
          attacks[r['noise']][fmt.eps_text(r.get('params'))] = (
              fmt.eps_value(r.get('params')))
    families = sorted(attacks, key=lambda f: (
        adversarial.FAMILIES.index(f) if f in adversarial.FAMILIES else 99,
        f))
    budgets = {f: sorted(attacks[f], key=attacks[f].get) for f in families}
    # Says so when the run covered fewer than the 15 (e.g. a sample grid).
    covered = max([c[2] for c in corr.get(arch, {}).values()], default=0)
    total = len(metrics.BENCHMARK)
    header = (['method', 'W/A bits', 'clean %'] +
              [_budget_header(f, budgets[f]) for f in families] +
              [f'corruption mean ({total}) %' if covered in (0, total) else
               f'corruption mean ({covered} of {total}) %', 'mCE %',
               'systematic mean ± std %'])
    body = []
    for who in sorted(by_who, key=_order):
      cells = by_who[who]
      clean = [r for r in cells if r.get('suite') == 'clean']
      adv = {(r['noise'], fmt.eps_text(r.get('params'))): r['accuracy']
             for r in cells if r.get('suite') == 'adversarial'}
      mean_c, mce, _ = corr.get(arch, {}).get(who[1],
                                              (math.nan, math.nan, 0))
      mean_s, std_s = syst.get(arch, {}).get(who[1], (math.nan, math.nan))
      body.append(
          [METHOD_NAMES[who[0]], _bits_text(who[1]),
           fmt.pct(clean[0]['accuracy'] if clean else None)] +
          [' / '.join(fmt.pct(adv.get((f, b))) for b in budgets[f])
           for f in families] +
          [fmt.pct(mean_c), fmt.pct(mce),
           fmt.MISSING if math.isnan(mean_s) else
           f'{fmt.pct(mean_s)} ± {fmt.pct(std_s)}'])
    out.append((f'{arch[1]} ({arch[0]})', fmt.Table(header, body)))
  return out


def section(rows: Sequence[Mapping[str, Any]]) -> fmt.Section | None:
  """One table per architecture (None when no row is float / PTQ / QAT)."""
  found = tables(rows)
  if not found:
    return None
  blocks: list[Any] = [
      'RobustMQ\'s layout: one table per architecture; rows are the float '
      'model and each quantization method × weight/activation bits; '
      'accuracies in %. An attack column lists the accuracy at each budget '
      'of its header, in that order. Corruption: mean over the 15 '
      'benchmark corruptions at severities 1–5, and mCE over the same '
      '(normaliser: AlexNet on ImageNet-C, else the fp32 model of the same '
      'architecture, mCE 100). Systematic: mean ± std over the (decoder, '
      'resize) cells. "–": not evaluated. Intervals and per-cell detail are '
      'in the sections below.']
  for title, table in found:
    blocks += [f'#### {title}', table]
  return fmt.Section('Paper tables (RobustMQ layout)', blocks, 'paper')
