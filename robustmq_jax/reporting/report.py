"""report.md, report.html, findings.json, results.csv and plots from rows.

`write_report(workdir, rows)` is the one entry point (the runner calls it at
the end of every run; `scripts/make_report.py` regenerates from
results.jsonl). Every section comes from its own module of this package;
report.md and report.html render the same `format.Section`s.
"""

import csv
import json
import os
from typing import Any, Mapping, Sequence

from absl import logging

from robustmq_jax import results as results_lib
from robustmq_jax.reporting import adversarial
from robustmq_jax.reporting import amplification
from robustmq_jax.reporting import clean
from robustmq_jax.reporting import corruption
from robustmq_jax.reporting import defenses
from robustmq_jax.reporting import examples as example_strip
from robustmq_jax.reporting import findings
from robustmq_jax.reporting import findings_text
from robustmq_jax.reporting import format as fmt
from robustmq_jax.reporting import html
from robustmq_jax.reporting import paper_tables
from robustmq_jax.reporting import plots
from robustmq_jax.reporting import systematic
from robustmq_jax.reporting.format import params_str

# Leading CSV columns; every other field follows in sorted order.
_FIRST = ('dataset', 'model', 'precision', 'method', 'suite', 'noise',
          'params', 'seed', 'n', 'accuracy')
_SKIP = ('versions', 'timestamp', 'outcomes')
_SUITE_ORDER = ('clean', 'adversarial', 'corruption', 'systematic',
                'amplification')


def write_csv(path: str, rows: Sequence[Mapping[str, Any]]) -> None:
  """results.csv: one line per row, dicts as JSON, without bitsets."""
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


def _is_accuracy(key: str) -> bool:
  return key.startswith('accuracy') or key.endswith('_fraction')


def suite_table(rows: Sequence[Mapping[str, Any]]) -> fmt.Table:
  """All rows of one suite: one line per cell, extra metrics as columns."""
  extra = sorted({k for r in rows for k, v in r.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool)}
                 - {'accuracy', 'n', 'seed', 'time_s'})
  flags = sorted({k for r in rows for k, v in r.items()
                  if isinstance(v, bool)})
  header = (['model', 'precision', 'method', 'noise', 'params', 'n',
             'accuracy %'] + [k + (' %' if _is_accuracy(k) else '')
                              for k in extra] + flags)
  body = []
  for r in sorted(rows, key=lambda r: (
      r['model'], fmt.precision_order(r['precision']), r.get('method', ''),
      r['noise'], fmt.params_key(r.get('params')))):
    body.append([r['model'], r['precision'], r.get('method', ''), r['noise'],
                 params_str(r.get('params')), str(r['n']),
                 fmt.pct(r['accuracy'])] +
                [(fmt.pct(r.get(k)) if _is_accuracy(k) else
                  fmt.number(r.get(k), 3)) if k in r else ''
                 for k in extra] +
                [('yes' if r.get(k) else 'no') if k in r else ''
                 for k in flags])
  return fmt.Table(header, body)


def sections(rows: Sequence[Mapping[str, Any]]) -> list[fmt.Section]:
  """The result sections, in report order (empty ones left out)."""
  out = []
  # The paper's one-table-per-architecture summary first, then the detail.
  for module in (paper_tables, clean, adversarial, corruption, systematic,
                 defenses, amplification):
    try:
      s = module.section(rows)
    except Exception as e:  # pylint: disable=broad-except
      logging.exception('report section %s failed', module.__name__)
      name = module.__name__.rsplit('.', 1)[-1]
      s = fmt.Section(name, [f'(section unavailable: {type(e).__name__}: '
                             f'{e})'], name)
    if s is not None:
      out.append(s)
  return out


def all_rows(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, fmt.Table]]:
  """(suite, table of all its rows), clean first."""
  by = {}
  for r in rows:
    by.setdefault(r['suite'], []).append(r)
  order = sorted(by, key=lambda s: (_SUITE_ORDER.index(s) if s in
                                    _SUITE_ORDER else 99, s))
  return [(s, suite_table(by[s])) for s in order]


def _intro(rows) -> str:
  datasets = sorted({r.get('dataset', '?') for r in rows})
  return (f'Dataset(s): {", ".join(datasets) or "-"}; {len(rows)} result '
          'cells. Accuracies are top-1 in percent with one decimal; a '
          '"drop" is in points and positive when accuracy falls. Generated '
          'from results.jsonl by `python scripts/make_report.py '
          '--workdir=DIR` (also findings.json, report.html, results.csv, '
          'plots/).')


def markdown(rows, result, secs, images, strip_note: str = '') -> str:
  """report.md's text."""
  out = ['# robustmq_jax report', '', _intro(rows), '',
         '## Paper findings checked', '', findings_text.markdown(result), '']
  out += [s.markdown() for s in secs]
  if images:
    out += ['## Plots', '']
    for p in images:
      name = os.path.basename(p.path)
      out += [f'![{p.caption}](plots/{name})', '']
  if strip_note:
    out += ['## Example images', '', strip_note, '']
  for suite, table in all_rows(rows):
    out += [f'<details><summary>All rows: {suite}</summary>', '',
            table.markdown(), '', '</details>', '']
  return '\n'.join(out)


def _write(path: str, text: str) -> None:
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    f.write(text)
  os.replace(path + '.tmp', path)


def write_report(workdir: str, rows: Sequence[Mapping[str, Any]], *,
                 examples: bool = True,
                 checkpoints: Mapping[str, str] | None = None) -> str:
  """Writes report.md, report.html, findings.json, results.csv, plots/.

  Args:
    workdir: the run's folder.
    rows: result rows (results.jsonl); a rerun's later row of a cell wins.
    examples: add the strip of example images (corruptions at each
      severity, an adversarial example) to report.html; computed once per
      workdir and kept in plots/examples/.
    checkpoints: {model: float checkpoint folder} for the adversarial
      example; by default `checkpoints/sample/<model>/fp32` of this
      repository when the dataset is the embedded sample.

  Returns:
    The path of report.md.
  """
  os.makedirs(workdir, exist_ok=True)
  every_row = list(rows)
  rows = results_lib.latest(every_row)
  write_csv(os.path.join(workdir, 'results.csv'), rows)
  # All rows: the findings use the newest of each cell themselves, and
  # only the older rows show that a repointed checkpoint mixed weights.
  result = findings.evaluate(every_row)
  findings.write_json(workdir, result)
  secs = sections(rows)
  images = plots.write_plots(os.path.join(workdir, 'plots'), rows)
  strip, note = None, ''
  if examples and rows:
    try:
      strip = example_strip.write_example_strip(workdir, rows,
                                                checkpoints=checkpoints)
    except Exception as e:  # pylint: disable=broad-except
      # The report must not fail for its illustrations.
      logging.exception('example images failed')
      note = f'Example images failed: {type(e).__name__}: {e}'
  if strip is not None:
    note = 'In report.html: ' + strip.note
  path = os.path.join(workdir, 'report.md')
  _write(path, markdown(rows, result, secs, images, note))
  _write(os.path.join(workdir, 'report.html'),
         html.render(title='robustmq_jax report', intro=_intro(rows),
                     result=result, sections=secs, images=images,
                     strip=strip, strip_note=note, tables=all_rows(rows)))
  return path
