"""report.md and results.csv from the rows of results.jsonl."""

import csv
import json
import os
from typing import Any, Mapping, Sequence

from robustmq_jax.reporting import findings
from robustmq_jax.reporting import plots

# Leading CSV columns; every other metric follows in sorted order.
_FIRST = ('dataset', 'model', 'precision', 'method', 'suite', 'noise',
          'params', 'seed', 'n', 'accuracy')
_SKIP = ('versions', 'timestamp')


def write_csv(path: str, rows: Sequence[Mapping[str, Any]]) -> None:
  extra = sorted({k for r in rows for k in r} - set(_FIRST) - set(_SKIP))
  with open(path + '.tmp', 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(list(_FIRST) + extra)
    for r in rows:
      w.writerow([_cell(r.get(k)) for k in list(_FIRST) + extra])
  os.replace(path + '.tmp', path)


def _cell(v):
  if isinstance(v, dict):
    return json.dumps(v, sort_keys=True)
  return '' if v is None else v


def params_str(params: Mapping[str, Any]) -> str:
  return ', '.join(f'{k}={v}' for k, v in sorted(params.items())) or '-'


def precision_order(p: str) -> tuple[int, str]:
  """fp32 first, then by decreasing weight bits (w8a8, w6a6, ...)."""
  if p == 'fp32':
    return (0, p)
  digits = ''.join(ch if ch.isdigit() else ' ' for ch in p).split()
  return (100 - int(digits[0]) if digits else 99, p)


def markdown_table(header: Sequence[str], body: Sequence[Sequence[Any]]) -> str:
  def fmt(x):
    if isinstance(x, float):
      return f'{x:.4f}'
    return str(x)
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '|'.join('---' for _ in header) + '|']
  lines += ['| ' + ' | '.join(fmt(x) for x in row) + ' |' for row in body]
  return '\n'.join(lines)


def suite_table(rows: Sequence[Mapping[str, Any]]) -> str:
  """All rows of one suite: one line per cell, extra metrics as columns."""
  extra = sorted({k for r in rows for k in r
                  if isinstance(r[k], (int, float)) and not isinstance(r[k], bool)}
                 - {'accuracy', 'n', 'seed', 'time_s'})
  flags = sorted({k for r in rows for k in r if isinstance(r[k], bool)})
  header = ['model', 'precision', 'method', 'noise', 'params', 'n',
            'accuracy'] + extra + flags
  body = []
  for r in sorted(rows, key=lambda r: (r['model'],
                                       precision_order(r['precision']),
                                       r['noise'], json.dumps(r['params'],
                                                              sort_keys=True))):
    body.append([r['model'], r['precision'], r.get('method', ''), r['noise'],
                 params_str(r['params']), r['n'], r['accuracy']] +
                [r.get(k, '') for k in extra] +
                [('**yes**' if r.get(k) else 'no') if k in r else ''
                 for k in flags])
  return markdown_table(header, body)


def write_report(workdir: str, rows: Sequence[Mapping[str, Any]]) -> str:
  """Writes report.md, results.csv and plots/*.png; returns report.md path."""
  from robustmq_jax import suites as suites_lib  # pylint: disable=g-import-not-at-top
  os.makedirs(workdir, exist_ok=True)
  write_csv(os.path.join(workdir, 'results.csv'), rows)
  images = plots.write_plots(os.path.join(workdir, 'plots'), rows)
  datasets = sorted({r['dataset'] for r in rows})
  out = ['# robustmq_jax report', '',
         f'Dataset(s): {", ".join(datasets) or "-"}; {len(rows)} result rows. '
         'Accuracy is top-1 as a fraction. Generated from results.jsonl by '
         '`python scripts/make_report.py --workdir=DIR`.', '']
  out += ['## Paper findings checked', '', findings.check(rows), '']
  from robustmq_jax.defenses import report as defenses_report  # pylint: disable=g-import-not-at-top
  defenses = defenses_report.section(rows)  # '' unless defenses were run.
  if defenses:
    out += [defenses, '']
  by_suite = {}
  for r in rows:
    by_suite.setdefault(r['suite'], []).append(r)
  for name in sorted(by_suite, key=lambda s: (s != 'clean', s)):
    srows = by_suite[name]
    out += [f'## Suite: {name}', '']
    try:
      summary = suites_lib.get_suite(name).summarize(srows)
    except Exception as e:  # pylint: disable=broad-except
      summary = f'(summary unavailable: {type(e).__name__}: {e})'
    if summary:
      out += [summary, '']
    out += ['<details><summary>All rows</summary>', '',
            suite_table(srows), '', '</details>', '']
  if images:
    out += ['## Plots', '']
    out += [f'![{os.path.basename(p)}](plots/{os.path.basename(p)})'
            for p in images]
    out += ['']
  path = os.path.join(workdir, 'report.md')
  with open(path + '.tmp', 'w') as f:
    f.write('\n'.join(out))
  os.replace(path + '.tmp', path)
  return path
