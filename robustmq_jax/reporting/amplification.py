"""The error-amplification section of the report (amplification suite)."""

from typing import Any, Mapping, Sequence

from robustmq_jax.defenses import amplification as amp
from robustmq_jax.reporting import format as fmt

PREFIX = 'amplification_'  # The suite's noise names: PREFIX + perturbation.


def _label(r: Mapping[str, Any]) -> str:
  m = r.get('method', '')
  return r['precision'] if (not m or m == 'float' or
                            r['precision'].endswith(':' + m)) else (
                                f'{r["precision"]} ({m})')


def section(rows: Sequence[Mapping[str, Any]]) -> fmt.Section | None:
  """Per model and perturbation, the gain at each layer (None if no rows)."""
  rows = [r for r in rows if r.get('suite') == 'amplification' and
          r.get('gain')]
  if not rows:
    return None
  blocks: list[Any] = [
      'Error amplification: mean ||h_l(x+d) - h_l(x)|| / ||d|| at each layer '
      'output (first layer, blocks, head), for an L-inf perturbation d; '
      '"vs fp32" divides the head gain by the float model\'s. Accuracy in %.']
  by = {}
  for r in rows:
    by.setdefault((r['model'], r['noise'], r['params'].get('eps_255')),
                  []).append(r)
  for (model, noise, eps), rs in sorted(by.items(), key=lambda kv: str(kv[0])):
    layers = rs[0]['layers']
    fp = [r for r in rs if r['precision'] == 'fp32' and
          r.get('method', 'float') == 'float'] or [
              r for r in rs if r['precision'] == 'fp32']
    fp_gain = fp[0]['gain_logits'] if fp else None
    body = []
    for r in sorted(rs, key=lambda r: fmt.precision_order(r['precision'])):
      g = r['gain']
      body.append([_label(r), fmt.pct(r['accuracy'])] +
                  [fmt.number(g.get(l)) for l in layers] +
                  [fmt.number(r['gain_logits'] / fp_gain) if fp_gain
                   else fmt.MISSING])
    eps_txt = fmt.MISSING if eps is None else f'{float(eps):g}/255'
    blocks.append(fmt.Table(
        ['precision', 'accuracy %'] + [amp.short_name(l) for l in layers] +
        ['vs fp32'], body,
        f'**{model}, {noise.removeprefix(PREFIX)}, ε {eps_txt}**'))
  return fmt.Section('Error amplification', blocks, 'amplification')
