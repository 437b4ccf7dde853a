"""report.html: one self-contained page (Jinja2 template, inline assets).

The page renders the same data as report.md: the findings (from
`findings.evaluate`), the `format.Section`s, the plots and the example
strip embedded as base64 data URIs, and every table sortable by a click on
its header (a few lines of inline JavaScript). Nothing is fetched from the
network.
"""

import base64
import html
import os
import re
from typing import Any, Mapping, Sequence

import jinja2

from robustmq_jax.reporting import format as fmt

_TEMPLATE = 'report.html.j2'


def data_uri(path: str) -> str:
  """A PNG file as a data: URI."""
  with open(path, 'rb') as f:
    return 'data:image/png;base64,' + base64.b64encode(f.read()).decode()


def _inline(text: str) -> str:
  """Escaped text with **bold**, `code` and <details> tags kept."""
  t = html.escape(text, quote=False)
  t = re.sub(r'\*\*(.+?)\*\*', r'<strong>\1</strong>', t)
  t = re.sub(r'\*(\S(?:.*?\S)?)\*', r'<em>\1</em>', t)
  return re.sub(r'`(.+?)`', r'<code>\1</code>', t)


def markdown_html(text: str) -> str:
  """The small Markdown subset the sections use: paragraphs, '- ' bullets
  (one nesting level by two spaces), '####' headings."""
  out, para, depth = [], [], 0

  def close_para():
    if para:
      out.append('<p>' + _inline(' '.join(para)) + '</p>')
      para.clear()

  def set_depth(d):
    nonlocal depth
    while depth < d:
      out.append('<ul>')
      depth += 1
    while depth > d:
      out.append('</ul>')
      depth -= 1

  for line in text.splitlines():
    stripped = line.lstrip()
    if stripped.startswith('- '):
      close_para()
      set_depth(1 + (len(line) - len(stripped)) // 2)
      out.append('<li>' + _inline(stripped[2:]) + '</li>')
    elif stripped.startswith('#'):
      close_para()
      set_depth(0)
      level = min(len(stripped) - len(stripped.lstrip('#')), 6)
      out.append(f'<h{level}>{_inline(stripped.lstrip("#").strip())}'
                 f'</h{level}>')
    elif not stripped:
      close_para()
      set_depth(0)
    else:
      set_depth(0)
      para.append(stripped)
  close_para()
  set_depth(0)
  return '\n'.join(out)


def _comparison_rows(f: Mapping[str, Any]) -> list[list[str]]:
  rows = []
  for c in f['comparisons']:
    rows.append([
        c['what'], c.get('method', ''), fmt.pct(c['a']), fmt.pct(c['b']),
        fmt.pct(c['diff'], True),
        f'[{fmt.pct(c["ci_low"], True)}, {fmt.pct(c["ci_high"], True)}]',
        f'{c.get("p_adjusted", c["p"]):.3g}',
        f'{c["n"]}' + ('' if c.get('paired') else ' (unpaired)'),
        c['outcome'].replace('_', ' ')])
  return rows


def _findings(result: Mapping[str, Any]) -> list[dict[str, Any]]:
  out = []
  for f in result['findings']:
    ranking = f.get('ranking') or []
    out.append({
        'id': f['id'], 'title': f['title'],
        'verdict': f['verdict'], 'verdict_text': f['verdict'].replace(
            '_', ' '),
        'held': f['held'], 'did_not_hold': f['did_not_hold'],
        'inconclusive': f['inconclusive'], 'masked': f['masked'],
        'note': f.get('note', ''),
        'ranking': [{'rank': r['rank'], 'corruption': r['corruption'],
                     'drop': fmt.pct(r['drop'])} for r in ranking
                    if r['rank']],
        'extras': [{'corruption': r['corruption'], 'drop': fmt.pct(r['drop'])}
                   for r in ranking if not r['rank']],
        'table': fmt.Table(
            ['comparison', 'method', 'a %', 'b %', 'diff', 'interval',
             'p (Holm)', 'n', 'outcome'], _comparison_rows(f)),
    })
  return out


def _blocks(section: fmt.Section) -> list[dict[str, Any]]:
  out = []
  for b in section.blocks:
    if isinstance(b, fmt.Table):
      out.append({'table': b, 'caption': markdown_html(b.caption)})
    else:
      out.append({'html': markdown_html(b)})
  return out


def _strip(strip) -> dict[str, Any] | None:
  if strip is None:
    return None
  uri = lambda name: data_uri(os.path.join(strip.folder, name))
  adv = None
  if strip.adversarial:
    a = strip.adversarial
    adv = dict(a, clean=uri(a['clean']), perturbation=uri(a['perturbation']),
               adversarial=uri(a['adversarial']))
  return {'original': uri(strip.original), 'note': strip.note,
          'corruptions': [{'name': name, 'extra': extra,
                           'images': [uri(f) for f in files]}
                          for name, extra, files in strip.corruptions],
          'adversarial': adv}


def render(*, title: str, intro: str, result: Mapping[str, Any],
           sections: Sequence[fmt.Section], images: Sequence[Any],
           strip: Any = None, strip_note: str = '',
           tables: Sequence[tuple[str, fmt.Table]] = ()) -> str:
  """The page's HTML text."""
  env = jinja2.Environment(
      loader=jinja2.PackageLoader('robustmq_jax.reporting', 'templates'),
      autoescape=jinja2.select_autoescape(['html', 'j2']),
      undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
  return env.get_template(_TEMPLATE).render(
      title=title, intro=markdown_html(intro),
      rules=markdown_html(result.get('rules', '')),
      findings=_findings(result),
      mixed=sorted(result.get('mixed_weights', {}).items()),
      sections=[{'title': s.title, 'anchor': s.anchor or s.title.lower(),
                 'blocks': _blocks(s)} for s in sections],
      plots=[{'uri': data_uri(p.path), 'caption': p.caption}
             for p in images],
      strip=_strip(strip), strip_note=strip_note, tables=tables)
