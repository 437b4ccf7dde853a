"""The findings section of report.md, from `findings.evaluate`'s result."""

from typing import Any, Mapping

import numpy as np

_WORDS = {'held': '**held**', 'did_not_hold': '**did not hold**',
          'inconclusive': '**inconclusive**', 'masked': 'masked'}


def _pct(x: float | None, signed: bool = False) -> str:
  """Percent with one decimal; never '-0.0'."""
  if x is None or not np.isfinite(x):
    return '–'
  v = round(100 * x, 1) + 0.0
  return f'{v:+.1f}' if signed else f'{v:.1f}'


def markdown(result: Mapping[str, Any], *, max_rows: int = 60) -> str:
  """The "Paper findings checked" section of report.md."""
  lines = []
  for f in result['findings']:
    counted = f['held'] + f['did_not_hold'] + f['inconclusive']
    if f['comparisons']:
      counts = (f'{f["held"]} held, {f["did_not_hold"]} did not hold, '
                f'{f["inconclusive"]} inconclusive of {counted} counted '
                f'comparisons; {f["masked"]} masked')
    else:
      counts = f.get('note', 'no comparison')
    lines.append(f'- **{f["id"]}** ({f["title"]}): {_WORDS[f["verdict"]]} — '
                 f'{counts}.')
  for model, hashes in sorted(result.get('mixed_weights', {}).items()):
    lines.append(f'- **Mixed weights**: {model} has rows from {len(hashes)} '
                 'float checkpoints; only the newest row of each cell is '
                 'used.')
  lines += ['', f'*Rules.* {result["rules"]}', '',
            'Accuracies and differences are in percent (points); "diff" is a '
            '− b (for a trend: the fitted change from the fewest to the most '
            'bits), with its interval at the Holm level and the '
            'Holm-adjusted p. A masked comparison involves a cell with a '
            'gradient-masking flag: its robustness may be an artefact of '
            'missing gradients and is not evidence for F1/F2.']
  for f in result['findings']:
    if f['id'] == 'F3' and f.get('ranking'):
      ranked = [r for r in f['ranking'] if r['rank']]
      extra = [r for r in f['ranking'] if not r['rank']]
      lines += ['', 'F3 ranking (quantized models; mean accuracy drop from '
                'their clean accuracy, points, severities 1–5): ' +
                ', '.join(f'{r["rank"]}. {r["corruption"]} '
                          f'{_pct(r["drop"])}' for r in ranked) +
                ('.' if not extra else '; not ranked (extras): ' +
                 ', '.join(f'{r["corruption"]} {_pct(r["drop"])}'
                           for r in extra) + '.')]
    if not f['comparisons']:
      continue
    comps = sorted(f['comparisons'], key=lambda c: (
        ['did_not_hold', 'held', 'masked', 'inconclusive'].index(
            c['outcome']), c['p']))
    lines += ['', f'<details><summary>{f["id"]}: {len(comps)} comparisons'
              '</summary>', '',
              '| comparison | method | a | b | diff | interval | p (Holm) '
              '| n | outcome |', '|---|---|---|---|---|---|---|---|---|']
    for c in comps[:max_rows]:
      lines.append(
          f'| {c["what"]} | {c["method"]} | {_pct(c["a"])} | '
          f'{_pct(c["b"])} | {_pct(c["diff"], True)} | '
          f'[{_pct(c["ci_low"], True)}, {_pct(c["ci_high"], True)}] | '
          f'{c["p_adjusted"]:.3g} | {c["n"]}'
          f'{"" if c.get("paired") else " (unpaired)"} | '
          f'{c["outcome"].replace("_", " ")} |')
    if len(comps) > max_rows:
      lines.append(f'\n{len(comps) - max_rows} more in findings.json.')
    lines += ['', '</details>']
  return '\n'.join(lines)
