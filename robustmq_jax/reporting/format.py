"""Formatting shared by every report section: one unit, one sign.

Every accuracy in the report is a percentage with one decimal ("71.3"); a
"drop" is positive when accuracy falls (reference minus measured); no
number prints as "-0.0". A section is a title and a list of blocks (text
paragraphs in Markdown, or `Table`s) that `report.md` and `report.html`
render from the same data.
"""

import dataclasses
import json
import math
from typing import Any, Mapping, Sequence

from robustmq_jax.reporting import stats

MISSING = '–'


def precision_order(p: str) -> tuple[int, str]:
  """fp32 first, then by decreasing weight bits (w8a8, w6a6, ...)."""
  if p == 'fp32':
    return (0, p)
  digits = ''.join(ch if ch.isdigit() else ' ' for ch in p).split()
  return (100 - int(digits[0]) if digits else 99, p)


def _finite(x: Any) -> bool:
  return (x is not None and not isinstance(x, (bool, str)) and
          math.isfinite(float(x)))


def pct(x: float | None, signed: bool = False) -> str:
  """A fraction as percent with one decimal; never '-0.0'."""
  if not _finite(x):
    return MISSING
  v = round(100.0 * float(x), 1) + 0.0  # + 0.0 turns -0.0 into 0.0.
  return f'{v:+.1f}' if signed and v != 0 else f'{v:.1f}'


def drop(reference: float | None, measured: float | None) -> str:
  """`reference - measured` in points: positive when accuracy falls."""
  if not (_finite(reference) and _finite(measured)):
    return MISSING
  return pct(float(reference) - float(measured))


def number(x: float | None, digits: int = 2) -> str:
  """A plain (non-accuracy) number, e.g. a gain."""
  if not _finite(x):
    return MISSING
  v = round(float(x), digits) + 0.0
  return f'{v:.{digits}f}'


def wilson_pct(accuracy: float | None, n: int | None) -> str:
  """'[lo, hi]' Wilson 95% interval of an accuracy measured on n examples."""
  if not _finite(accuracy) or not n:
    return MISSING
  lo, hi = wilson(accuracy, n)
  return f'[{pct(lo)}, {pct(hi)}]'


def wilson(accuracy: float, n: int) -> tuple[float, float]:
  """Wilson 95% interval of an accuracy (k = round(accuracy * n))."""
  return stats.wilson(round(float(accuracy) * int(n)), int(n))


def params_str(params: Mapping[str, Any] | None) -> str:
  return ', '.join(f'{k}={v}' for k, v in sorted((params or {}).items())) or (
      '-')


def eps_text(params: Mapping[str, Any] | None) -> str:
  """'8/255' for L-inf budgets in 1/255 units, else the plain budget."""
  p = params or {}
  if 'eps_255' in p:
    return f'{float(p["eps_255"]):g}/255'
  if 'eps' in p:
    return f'{float(p["eps"]):g}'
  return MISSING


def eps_value(params: Mapping[str, Any] | None) -> float:
  """The budget as a number for ordering and plotting."""
  p = params or {}
  if 'eps_255' in p:
    return float(p['eps_255'])
  return float(p.get('eps', math.nan))


def params_key(params: Mapping[str, Any] | None) -> str:
  return json.dumps(params or {}, sort_keys=True, default=str)


def markdown_table(header: Sequence[Any], body: Sequence[Sequence[Any]]) -> str:
  """A Markdown table; floats print with 4 significant digits."""
  def fmt(x):
    if isinstance(x, float):
      return f'{x:.4g}'
    return str(x).replace('|', '\\|')
  lines = ['| ' + ' | '.join(fmt(h) for h in header) + ' |',
           '|' + '|'.join('---' for _ in header) + '|']
  lines += ['| ' + ' | '.join(fmt(x) for x in row) + ' |' for row in body]
  return '\n'.join(lines)


@dataclasses.dataclass
class Table:
  """A table of preformatted cells (strings), with an optional caption."""
  header: list[str]
  rows: list[list[str]]
  caption: str = ''

  def markdown(self) -> str:
    out = [self.caption, ''] if self.caption else []
    return '\n'.join(out + [markdown_table(self.header, self.rows)])


@dataclasses.dataclass
class Section:
  """A report section: a title, Markdown paragraphs and tables.

  Attributes:
    title: the section heading (without '#').
    blocks: in order; a str is a Markdown paragraph (may hold '- ' bullets
      and '####' sub-headings), a `Table` a table.
    anchor: the HTML id of the section ('' = derived from the title).
  """
  title: str
  blocks: list[Any]
  anchor: str = ''

  def markdown(self, level: int = 2) -> str:
    out = ['#' * level + ' ' + self.title, '']
    for b in self.blocks:
      out += [b.markdown() if isinstance(b, Table) else b, '']
    return '\n'.join(out).rstrip() + '\n'
