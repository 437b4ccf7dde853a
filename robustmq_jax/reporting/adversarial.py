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
  return fmt.Section('Adversarial robustness', [text, table, tail],
                     'adversarial')
