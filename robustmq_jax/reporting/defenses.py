"""The report's "Defenses" section: methods side by side, claims checked.

`section(rows)` reads the result rows of a run that evaluated defense
precisions (configs/defenses.py) and writes, per model:

* a table of clean, PGD (each L-inf budget), AutoAttack, transfer (PGD from
  the float model at the AutoAttack budget) and mean corruption accuracy for
  float, the adversarially trained float model and, at every bit width,
  PTQ, vanilla QAT, DQ, uniform PTQ of the adversarial model and LAAQ;
* the error amplification of each model's head (amplification suite);
* a verdict on each claim of the two papers, settled by the same rules as
  the paper findings (`verdicts`): each claim is one Holm family of
  comparisons between cells on the same examples. Amplification gains have
  no per-example record, so their claims are shown without a verdict.
"""

import collections
from typing import Any, Mapping, Sequence

import numpy as np

from robustmq_jax.defenses import settings as settings_lib
from robustmq_jax.reporting import format as fmt
from robustmq_jax.reporting import verdicts
from robustmq_jax.results import outcomes

_ORDER = ('float', 'adv', 'ptq', 'dorefa', 'pact', 'lsq', 'dq', 'adv_ptq',
          'laaq')
_NAMES = {'float': 'float', 'adv': 'float, PGD-trained', 'ptq': 'PTQ',
          'lsq': 'vanilla QAT (LSQ)', 'pact': 'vanilla QAT (PACT)',
          'dorefa': 'vanilla QAT (DoReFa)', 'dq': 'DQ',
          'adv_ptq': 'PGD-trained + uniform PTQ', 'laaq': 'LAAQ'}
_VANILLA = ('lsq', 'pact', 'dorefa')
_WORDS = {'held': '**held**', 'did_not_hold': '**did not hold**',
          'inconclusive': '**inconclusive**'}


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
  """{model: {(base, method): {metric: row or value}}} and the budgets.

  Accuracy metrics ('clean', 'pgd@<eps>', 'autoattack') hold the row;
  'transfer@<eps>', 'corruption' (mean over severities >= 1) and the gains
  hold numbers.
  """
  out = collections.defaultdict(lambda: collections.defaultdict(dict))
  corr = collections.defaultdict(list)
  pgd_eps, aa_eps = set(), set()
  for r in rows:
    m = out[r['model']][_key(r['precision'], r.get('method', ''))]
    suite, noise, p = r['suite'], r['noise'], r.get('params', {})
    if suite == 'clean':
      m['clean'] = r
    elif suite == 'adversarial' and noise == 'pgd_linf':
      e = _eps_255(p)
      pgd_eps.add(e)
      m[f'pgd@{e:g}'] = r
      if r.get('accuracy_transfer') is not None:
        m[f'transfer@{e:g}'] = r['accuracy_transfer']
    elif suite == 'adversarial' and noise == 'autoattack':
      aa_eps.add(_eps_255(p))
      m['autoattack'] = r
    elif (suite == 'corruption' and noise != 'none' and
          int(p.get('severity', 1)) >= 1):
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


def _order(k):
  base, method = k
  return (-_bits(base), _ORDER.index(method) if method in _ORDER else 99)


def _acc(v) -> float | None:
  return v['accuracy'] if isinstance(v, Mapping) else v


def _table(models_data, pgd_eps, headline) -> fmt.Table:
  adv_cols = [] if headline is None else [
      ('autoattack', f'AutoAttack {headline:g}/255 %'),
      (f'transfer@{headline:g}', f'transfer {headline:g}/255 %')]
  cols = ([('clean', 'clean %')] +
          [(f'pgd@{e:g}', f'PGD {e:g}/255 %') for e in pgd_eps] + adv_cols +
          [('corruption', 'mean corruption %'),
           ('gain_pgd_float', 'head gain (float PGD)'),
           ('gain_pgd_self', 'head gain (own PGD)')])
  body = []
  for k in sorted(models_data, key=_order):
    d = models_data[k]
    body.append([k[0], _NAMES.get(k[1], k[1])] + [
        fmt.number(d.get(c)) if c.startswith('gain')
        else fmt.pct(_acc(d.get(c))) for c, _ in cols])
  return fmt.Table(['bits', 'method'] + [c[1] for c in cols], body)


def _claim(text: str, comps: list[dict[str, Any]]) -> str:
  """One bullet: the claim, its verdict and each comparison's outcome."""
  if not comps:
    return f'- {text}: not evaluated (rows missing).'
  t = verdicts.tally(comps)
  verdict = verdicts.finding_verdict(comps)
  head = (f'- {text}: {_WORDS[verdict]} ({t["held"]} held, '
          f'{t["did_not_hold"]} did not hold, {t["inconclusive"]} '
          f'inconclusive, {t["masked"]} masked)')
  body = []
  for c in comps:
    ci = f'[{fmt.pct(c["ci_low"], True)}, {fmt.pct(c["ci_high"], True)}]'
    body.append(f'  - {c["what"]}: {fmt.pct(c["a"])} vs {fmt.pct(c["b"])}, '
                f'diff {fmt.pct(c["diff"], True)} {ci}, n={c["n"]}'
                f'{"" if c.get("paired") else " (unpaired)"}: '
                f'{c["outcome"].replace("_", " ")}'
                + (f' ({c["note"]})' if c.get('note') else ''))
  return '\n'.join([head + '.'] + body)


def _robust(better, worse, names, bit_bases, pgd_eps, method):
  comps = []
  for base in bit_bases:
    a, b = better(base), worse(base)
    if not a or not b:
      continue
    for metric, label in [(f'pgd@{e:g}', f'PGD {e:g}/255')
                          for e in pgd_eps] + [('autoattack', 'AutoAttack')]:
      if metric in a and metric in b:
        comps.append(verdicts.compare(
            a[metric], b[metric], expect='higher', method=method,
            what=f'{base} {label}: {names[0]} vs {names[1]}'))
  return comps


def _clean(better, worse, names, bit_bases, method, last_only=False):
  comps = []
  for base in bit_bases:
    a, b = better(base), worse(base)
    if a and b and 'clean' in a and 'clean' in b:
      comps.append(verdicts.compare(
          a['clean'], b['clean'], expect='higher', method=method,
          what=f'{base} clean: {names[0]} vs {names[1]}'))
  return comps[-1:] if last_only else comps


def _quantization_loss(d, bit_bases) -> list[dict[str, Any]]:
  """Clean-accuracy loss to PTQ: PGD-trained vs plain (claim: larger)."""
  fp, adv = d.get(('fp32', 'float'), {}), d.get(('fp32', 'adv'), {})
  comps, fixed = [], []
  for base in bit_bases:
    ap, pp = d.get((base, 'adv_ptq'), {}), d.get((base, 'ptq'), {})
    four = [x.get('clean') for x in (adv, ap, fp, pp)]
    if any(r is None for r in four):
      continue
    what = f'{base} clean-accuracy loss to PTQ: PGD-trained vs plain'
    got = outcomes.aligned(four)
    if got is not None:
      h = got[1].astype(np.float64)
      comps.append(verdicts.compare_scores(
          h[0] - h[1], h[2] - h[3], expect='higher', method='adv_ptq',
          what=what))
    else:
      da = four[0]['accuracy'] - four[1]['accuracy']
      dp = four[2]['accuracy'] - four[3]['accuracy']
      fixed.append({'what': what, 'method': 'adv_ptq', 'expect': 'higher',
                    'a': da, 'b': dp, 'diff': da - dp, 'ci_low': float('nan'),
                    'ci_high': float('nan'), 'p': 1.0, 'p_adjusted': 1.0,
                    'n': min(int(r['n']) for r in four), 'paired': False,
                    'outcome': 'inconclusive', 'masked': False,
                    'note': 'a difference of differences needs per-example '
                            'outcomes'})
  return verdicts.decide(comps) + fixed


def _gains(text, pairs) -> str:
  if not pairs:
    return f'- {text}: not evaluated (rows missing).'
  return (f'- {text}: no verdict (gains carry no per-example record to test '
          'them); ' + '; '.join(pairs) + '.')


def _claims(d, pgd_eps, bit_bases) -> list[str]:
  fp = d.get(('fp32', 'float'), {})

  def vanilla(base):
    for m in _VANILLA:
      if (base, m) in d:
        return d[(base, m)]
    return None

  get = lambda m: (lambda base: d.get((base, m)))
  flt = lambda base: fp or None
  dec = verdicts.decide
  lines = ['**Defensive Quantization** (Lin, Gan, Han, ICLR 2019):']
  lines.append(_claim(
      'vanilla quantized models are less robust than float under attack',
      dec(_robust(flt, vanilla, ('float', 'vanilla'), bit_bases, pgd_eps,
                  'vanilla'))))
  lines.append(_claim('DQ models are more robust than float', dec(_robust(
      get('dq'), flt, ('DQ', 'float'), bit_bases, pgd_eps, 'dq'))))
  lines.append(_claim('DQ models are more robust than vanilla quantized',
                      dec(_robust(get('dq'), vanilla, ('DQ', 'vanilla'),
                                  bit_bases, pgd_eps, 'dq'))))
  lines.append(_claim('DQ raises clean accuracy at low bits (vs vanilla)',
                      dec(_clean(get('dq'), vanilla, ('DQ', 'vanilla'),
                                 bit_bases, 'dq', last_only=True))))
  amp = []
  for base in bit_bases:
    v, q = vanilla(base), get('dq')(base)
    if v and fp.get('gain_pgd_float') and v.get('gain_pgd_float'):
      amp.append(f'{base} vanilla {fmt.number(v["gain_pgd_float"])} vs float '
                 f'{fmt.number(fp["gain_pgd_float"])}')
    if q and v and q.get('gain_pgd_float') and v.get('gain_pgd_float'):
      amp.append(f'{base} DQ {fmt.number(q["gain_pgd_float"])} vs vanilla '
                 f'{fmt.number(v["gain_pgd_float"])}')
  lines.append(_gains('error amplification: vanilla quantized models amplify '
                      'a (float-model PGD) perturbation more than float, and '
                      'DQ less than vanilla, at the head', amp))
  lines += ['', '**Layer-wise adversarial-aware quantization** (Song, Ranjan, '
            'Li, 2021; our reconstruction):']
  lines.append(_claim('adversarially trained models lose more clean accuracy '
                      'to quantization than plainly trained ones',
                      _quantization_loss(d, bit_bases)))
  lines.append(_claim('LAAQ is more robust than uniform quantization of the '
                      'same PGD-trained model',
                      dec(_robust(get('laaq'), get('adv_ptq'),
                                  ('LAAQ', 'uniform'), bit_bases, pgd_eps,
                                  'laaq'))))
  lines.append(_claim('LAAQ keeps more clean accuracy than uniform '
                      'quantization',
                      dec(_clean(get('laaq'), get('adv_ptq'),
                                 ('LAAQ', 'uniform'), bit_bases, 'laaq'))))
  return lines


def section(rows: Sequence[Mapping[str, Any]]) -> fmt.Section | None:
  """The 'Defenses' section (None when no defense rows)."""
  if not has_defenses(rows):
    return None
  data, pgd_eps, aa_eps = collect(rows)
  headline = aa_eps[-1] if aa_eps else (pgd_eps[-1] if pgd_eps else None)
  blocks: list[Any] = [
      'Accuracy (%) of each method at the same bits. PGD and AutoAttack are '
      'white-box (straight-through gradients for quantized models); '
      '"transfer" is PGD crafted on the float model; "head gain" is the '
      'error amplification at the logits (amplification suite). Each claim '
      'is a family of comparisons settled by the rules of the findings '
      'section (Holm within the claim; differences a − b in points with '
      'their interval); verdicts describe this run only.']
  for model in sorted(data):
    d = data[model]
    bit_bases = sorted({b for b, _ in d if b != 'fp32'}, key=_bits,
                       reverse=True)
    blocks += [f'#### {model}', _table(d, pgd_eps, headline),
               '\n'.join(_claims(d, pgd_eps, bit_bases))]
  return fmt.Section('Defenses', blocks, 'defenses')
