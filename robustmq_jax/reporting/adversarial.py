"""The adversarial section of the report: accuracy per attack and budget."""

from typing import Any, Mapping, Sequence

from robustmq_jax.attacks import masking
from robustmq_jax.reporting import format as fmt

# The suite's attack families, in the order the report lists them.
FAMILIES = ('fgsm', 'pgd_linf', 'pgd_l2', 'pgd_l1', 'apgd_ce', 'autoattack',
            'square')
_WHITE_LINF = ('pgd_linf', 'apgd_ce', 'autoattack')


def _who(r: Mapping[str, Any]) -> str:
  return f'{r.get("model")} {r.get("precision")}'


def sort_key(r: Mapping[str, Any]) -> tuple:
  order = {f: i for i, f in enumerate(FAMILIES)}
  return (r.get('dataset', ''), r.get('model', ''),
          fmt.precision_order(r.get('precision', '')), r.get('method', ''),
          order.get(r.get('noise'), 99), r.get('noise', ''),
          fmt.eps_value(r.get('params')))


def masking_notes(rows: Sequence[Mapping[str, Any]]) -> list[str]:
  """Cells flagged for gradient masking, and Square below white-box."""
  notes = [f'{_who(r)} {r.get("noise")} ε={fmt.eps_text(r.get("params"))}'
           for r in rows if r.get('masking_flag')]
  white = {}
  for r in rows:
    if r.get('noise') in _WHITE_LINF:
      k = (r.get('model'), r.get('precision'),
           round(float(r.get('params', {}).get('eps', -1)), 8))
      white[k] = min(white.get(k, 1.0), r['accuracy'])
  for r in rows:
    if r.get('noise') != 'square':
      continue
    k = (r.get('model'), r.get('precision'),
         round(float(r.get('params', {}).get('eps', -1)), 8))
    if k in white and r['accuracy'] < white[k] - masking.MASKING_MARGIN:
      notes.append(f'{k[0]} {k[1]}: Square {fmt.pct(r["accuracy"])}% below '
                   f'white-box {fmt.pct(white[k])}% at ε='
                   f'{fmt.eps_text(r.get("params"))}')
  return notes


def rising_with_budget(rows: Sequence[Mapping[str, Any]],
                       margin: float = masking.MASKING_MARGIN) -> list[str]:
  """Attacks whose robust accuracy rises with the budget, one note each.

  A larger budget contains every perturbation of a smaller one, so a sound
  attack never does worse with it (Carlini et al., 2019, "On evaluating
  adversarial robustness", 4.5). A rise of more than `margin` means the
  attack's steps miss what they found at the smaller budget: a single FGSM
  step overshooting a sharply curved loss, or gradients that mislead.
  The note gives the largest rise over a smaller budget of the same model,
  precision and attack (the suite attacks the same examples at each).
  """
  groups: dict[tuple, list] = {}
  for r in rows:
    if r.get('suite', 'adversarial') == 'adversarial' and 'accuracy' in r:
      k = (r.get('dataset'), r.get('model'), r.get('precision'),
           r.get('noise'))
      groups.setdefault(k, []).append(r)
  notes = []
  for k, rs in groups.items():
    rs = sorted(rs, key=lambda r: fmt.eps_value(r.get('params')))
    low, worst = None, None
    for r in rs:
      if low is not None:
        rise = r['accuracy'] - low['accuracy']
        if rise > margin and (worst is None or rise > worst[0]):
          worst = (rise, low, r)
      if low is None or r['accuracy'] < low['accuracy']:
        low = r
    if worst:
      _, a, b = worst
      notes.append(f'{k[1]} {k[2]} {k[3]}: {fmt.pct(b["accuracy"])}% at '
                   f'ε={fmt.eps_text(b.get("params"))}, above '
                   f'{fmt.pct(a["accuracy"])}% at '
                   f'ε={fmt.eps_text(a.get("params"))}')
  return notes


def section(rows: Sequence[Mapping[str, Any]]) -> fmt.Section | None:
  """Robust accuracy per model, precision, attack and ε (None if no rows)."""
  rows = sorted((r for r in rows if r.get('suite') == 'adversarial'),
                key=sort_key)
  if not rows:
    return None
  body = []
  for r in rows:
    body.append([
        r.get('model', ''), r.get('precision', ''), r.get('method', ''),
        r.get('noise', ''), fmt.eps_text(r.get('params')), str(r.get('n')),
        fmt.pct(r.get('accuracy')),
        fmt.wilson_pct(r.get('accuracy'), r.get('n')),
        fmt.pct(r.get('accuracy_transfer')), fmt.pct(r.get('accuracy_int8')),
        fmt.pct(r.get('zero_grad_fraction')),
        'yes' if r.get('masking_flag') else 'no'])
  text = ('Robust accuracy (%) under attack, with its Wilson 95% interval: '
          'white-box through the gradient forward (straight-through twin for '
          'quantized models), scored on the evaluated model; "transfer": the '
          'same attack crafted on the float model; "int8": the white-box '
          'adversarials on the real-integer graph; "zero-grad": % of '
          'examples whose input gradient is exactly zero.')
  table = fmt.Table(['model', 'precision', 'method', 'attack', 'ε', 'n',
                     'accuracy %', '95% interval', 'transfer %', 'int8 %',
                     'zero-grad %', 'masking'], body)
  notes = masking_notes(rows)
  if notes:
    tail = ('**Possible gradient masking** (a transfer or black-box attack '
            'beat the white-box one by more than the margin; treat these '
            'robustness numbers as upper bounds; the findings count them as '
            '`masked`, not as evidence):\n' +
            '\n'.join(f'- {n}' for n in notes))
  else:
    tail = ('No gradient-masking flag: white-box attacks were at least as '
            'strong as transfer and black-box attacks.')
  parts = [text, table, tail]
  rising = rising_with_budget(rows)
  if rising:
    parts.append(
        '**Accuracy rising with the budget** (a larger ε contains every '
        'smaller perturbation, so the attack should never do worse; its '
        'steps missed adversarials it found at a smaller ε: a single FGSM '
        'step overshooting a curved loss, or misleading gradients. Read '
        'these models\' numbers at large ε as upper bounds; not counted as '
        '`masked` by the findings):\n' +
        '\n'.join(f'- {n}' for n in rising))
  return fmt.Section('Adversarial robustness', parts, 'adversarial')
