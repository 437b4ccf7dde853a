"""The report's "Defenses" section: methods side by side, claims checked.

`section(rows)` reads the result rows of a run that evaluated defense
precisions (configs/defenses.py) and writes, per model:

* a table of clean, PGD (each L-inf budget), AutoAttack, transfer (PGD from
  the float model at the AutoAttack budget) and mean corruption accuracy for
  float, the adversarially trained float model and, at every bit width,
  PTQ, vanilla QAT, DQ, uniform PTQ of the adversarial model and LAAQ;
* the error amplification of each model's head (from the amplification
  suite);
* a verdict on each claim of the two papers, with the numbers it used.

A comparison whose two numbers are equal (e.g. both 0 under a large
budget) is a "tie", not a verdict.
"""

import collections
from typing import Any, Mapping, Sequence

import numpy as np

from robustmq_jax.defenses import settings as settings_lib

_TRANSFER_FAMILY = 'pgd_linf'
_ORDER = ('float', 'adv', 'ptq', 'dorefa', 'pact', 'lsq', 'dq', 'adv_ptq',
          'laaq')
_NAMES = {'float': 'float', 'adv': 'float, PGD-trained', 'ptq': 'PTQ',
          'lsq': 'vanilla QAT (LSQ)', 'pact': 'vanilla QAT (PACT)',
          'dorefa': 'vanilla QAT (DoReFa)', 'dq': 'DQ',
          'adv_ptq': 'PGD-trained + uniform PTQ', 'laaq': 'LAAQ'}
_VANILLA = ('lsq', 'pact', 'dorefa')


def _bits(base: str) -> int:
  digits = ''.join(c if c.isdigit() else ' ' for c in base).split()
  return int(digits[0]) if digits and base != 'fp32' else 32


def _key(precision: str, method: str) -> tuple[str, str]:
  base, suffix = settings_lib.split_precision(precision)
  return base, suffix or method or 'float'


def _eps_255(params) -> float:
  if 'eps_255' in params:
    return float(params['eps_255'])
  return round(float(params['eps']) * 255, 3)


def collect(rows: Sequence[Mapping[str, Any]]):
  """{model: {(base, method): {metric: value}}} and the budgets seen."""
  out = collections.defaultdict(lambda: collections.defaultdict(dict))
  corr = collections.defaultdict(list)
  pgd_eps, aa_eps = set(), set()
  for r in rows:
    m = out[r['model']][_key(r['precision'], r.get('method', ''))]
    suite, noise, p = r['suite'], r['noise'], r.get('params', {})
    if suite == 'clean':
      m['clean'] = r['accuracy']
    elif suite == 'adversarial' and noise == 'pgd_linf':
      e = _eps_255(p)
      pgd_eps.add(e)
      m[f'pgd@{e:g}'] = r['accuracy']
      if r.get('accuracy_transfer') is not None:
        m[f'transfer@{e:g}'] = r['accuracy_transfer']
    elif suite == 'adversarial' and noise == 'autoattack':
      e = _eps_255(p)
      aa_eps.add(e)
      m['autoattack'] = r['accuracy']
    elif suite == 'corruption' and noise != 'none':
      corr[(r['model'], _key(r['precision'], r.get('method', '')))].append(
          r['accuracy'])
    elif suite == 'amplification' and r.get('gain_logits') is not None:
      m['gain_' + noise.removeprefix('amplification_')] = r['gain_logits']
  for (model, k), accs in corr.items():
    out[model][k]['corruption'] = float(np.mean(accs))
  return out, sorted(pgd_eps), sorted(aa_eps)


def has_defenses(rows: Sequence[Mapping[str, Any]]) -> bool:
  return any(settings_lib.split_precision(r.get('precision', ''))[1]
             in settings_lib.METHODS for r in rows)


def _pct(v) -> str:
  return '-' if v is None else f'{100 * v:.1f}'


def _order(k):
  base, method = k
  return (-_bits(base), _ORDER.index(method) if method in _ORDER else 99)


def _table(models_data, pgd_eps, headline) -> list[str]:
  adv_cols = [] if headline is None else [
      ('autoattack', f'AutoAttack {headline:g}/255'),
      (f'transfer@{headline:g}', f'transfer {headline:g}/255')]
  cols = ([('clean', 'clean')] +
          [(f'pgd@{e:g}', f'PGD {e:g}/255') for e in pgd_eps] + adv_cols +
          [('corruption', 'mean corruption'),
           ('gain_pgd_float', 'head gain (float PGD)'),
           ('gain_pgd_self', 'head gain (own PGD)')])
  lines = ['| bits | method | ' + ' | '.join(c[1] for c in cols) + ' |',
           '|' + '---|' * (len(cols) + 2)]
  for k in sorted(models_data, key=_order):
    d = models_data[k]
    cells = []
    for c, _ in cols:
      v = d.get(c)
      cells.append('-' if v is None else (f'{v:.2f}' if c.startswith('gain')
                                          else _pct(v)))
    lines.append(f'| {k[0]} | {_NAMES.get(k[1], k[1])} | ' +
                 ' | '.join(cells) + ' |')
  return lines


def _cmp(a, b, higher=True):
  """'held' / 'did not hold' / 'tie' for a (claimed better) vs b."""
  if a is None or b is None:
    return None
  if abs(a - b) < 1e-12:
    return 'tie'
  return 'held' if (a > b) == higher else 'did not hold'


def _claim(text, checks) -> str:
  """One bullet: the claim and its per-comparison outcomes."""
  done = [(label, outcome) for label, outcome in checks if outcome]
  if not done:
    return f'- {text}: not evaluated (rows missing).'
  verdicts = {o.split(' ')[0] if o.startswith('tie') else o
              for _, o in done}
  decided = verdicts - {'tie'}
  if not decided:
    overall = 'tie (no difference)'
  elif decided == {'held'}:
    overall = '**held**'
  elif decided == {'did not hold'}:
    overall = '**did not hold**'
  else:
    overall = '**mixed**'
  body = '; '.join(f'{label} {o}' for label, o in done)
  return f'- {text}: {overall} ({body}).'


def _claims(d, pgd_eps, bit_bases) -> list[str]:
  fp = d.get(('fp32', 'float'), {})
  adv = d.get(('fp32', 'adv'), {})
  lines = []

  def robust_checks(better, worse, names):
    out = []
    for base in bit_bases:
      a, b = better(base), worse(base)
      if a is None or b is None:
        continue
      for metric, label in [(f'pgd@{e:g}', f'PGD {e:g}/255')
                            for e in pgd_eps] + [('autoattack', 'AutoAttack')]:
        x, y = a.get(metric), b.get(metric)
        o = _cmp(x, y)
        if o:
          out.append((f'{base} {label}: {names[0]} {_pct(x)} vs {names[1]} '
                      f'{_pct(y)}', o))
    return out

  def vanilla(base):
    for m in _VANILLA:
      if (base, m) in d:
        return d[(base, m)]
    return None

  get = lambda m: (lambda base: d.get((base, m)))
  lines.append('**Defensive Quantization** (Lin, Gan, Han, ICLR 2019):')
  lines.append(_claim(
      'vanilla quantized models are less robust than float under attack',
      robust_checks(lambda b: fp or None, vanilla, ('float', 'vanilla'))))
  lines.append(_claim('DQ models are more robust than float',
                      robust_checks(get('dq'), lambda b: fp or None, ('DQ', 'float'))))
  lines.append(_claim('DQ models are more robust than vanilla quantized',
                      robust_checks(get('dq'), vanilla, ('DQ', 'vanilla'))))
  clean = []
  for base in bit_bases:
    a, b = get('dq')(base), vanilla(base)
    if a and b:
      o = _cmp(a.get('clean'), b.get('clean'))
      if o:
        clean.append((f'{base}: DQ {_pct(a.get("clean"))} vs vanilla '
                      f'{_pct(b.get("clean"))}', o))
  lines.append(_claim('DQ raises clean accuracy at low bits (vs vanilla)',
                      clean[-1:] if clean else []))
  amp = []
  for base in bit_bases:
    v = vanilla(base)
    if v and fp.get('gain_pgd_float') and v.get('gain_pgd_float'):
      amp.append((f'{base} vanilla {v["gain_pgd_float"]:.2f} vs float '
                  f'{fp["gain_pgd_float"]:.2f}',
                  _cmp(v['gain_pgd_float'], fp['gain_pgd_float'])))
  lines.append(_claim('error amplification: vanilla quantized models amplify '
                      'a (float-model PGD) perturbation more than float, '
                      'at the head', amp))
  amp = []
  for base in bit_bases:
    q, v = get('dq')(base), vanilla(base)
    if q and v and q.get('gain_pgd_float') and v.get('gain_pgd_float'):
      amp.append((f'{base} DQ {q["gain_pgd_float"]:.2f} vs vanilla '
                  f'{v["gain_pgd_float"]:.2f}',
                  _cmp(q['gain_pgd_float'], v['gain_pgd_float'],
                       higher=False)))
  lines.append(_claim('DQ amplifies less than vanilla quantized', amp))
  lines.append('')
  lines.append('**Layer-wise adversarial-aware quantization** (Song, Ranjan, '
               'Li, 2021; our reconstruction):')
  drop = []
  for base in bit_bases:
    ap, pp = get('adv_ptq')(base), get('ptq')(base)
    if ap and pp and adv and fp:
      da = adv.get('clean', 0) - ap.get('clean', 0)
      dp = fp.get('clean', 0) - pp.get('clean', 0)
      drop.append((f'{base} clean-accuracy loss to PTQ: PGD-trained '
                   f'{100 * da:.1f} vs plain {100 * dp:.1f} points',
                   _cmp(da, dp)))
  lines.append(_claim('adversarially trained models lose more to '
                      'quantization than plainly trained ones', drop))
  lines.append(_claim('LAAQ is more robust than uniform quantization of the '
                      'same PGD-trained model',
                      robust_checks(get('laaq'), get('adv_ptq'),
                                     ('LAAQ', 'uniform'))))
  clean = []
  for base in bit_bases:
    a, b = get('laaq')(base), get('adv_ptq')(base)
    if a and b:
      o = _cmp(a.get('clean'), b.get('clean'))
      if o:
        clean.append((f'{base}: LAAQ {_pct(a.get("clean"))} vs uniform '
                      f'{_pct(b.get("clean"))}', o))
  lines.append(_claim('LAAQ keeps more clean accuracy than uniform '
                      'quantization', clean))
  return lines


def section(rows: Sequence[Mapping[str, Any]]) -> str:
  """Markdown '## Defenses' section ('' when no defense rows)."""
  if not has_defenses(rows):
    return ''
  data, pgd_eps, aa_eps = collect(rows)
  headline = aa_eps[-1] if aa_eps else (pgd_eps[-1] if pgd_eps else None)
  out = ['## Defenses', '',
         'Accuracy (%) of each method at the same bits. PGD and AutoAttack '
         'are white-box (straight-through gradients for quantized models); '
         '"transfer" is PGD crafted on the float model; "head gain" is the '
         'error amplification at the logits (amplification suite). '
         'Verdicts describe this run only.', '']
  for model in sorted(data):
    d = data[model]
    bit_bases = sorted({b for b, _ in d if b != 'fp32'}, key=_bits,
                       reverse=True)
    out += [f'### {model}', '']
    out += _table(d, pgd_eps, headline)
    out += [''] + _claims(d, pgd_eps, bit_bases) + ['']
  return '\n'.join(out)
