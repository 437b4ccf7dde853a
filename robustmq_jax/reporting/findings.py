"""RobustMQ's four findings (arXiv 2308.02350) tested on result rows.

F1  Quantized models are more adversarially robust than the float model,
    but less robust to natural corruptions and systematic noise.
F2  More bits: lower adversarial robustness, higher natural and systematic
    robustness.
F3  Impulse noise and glass blur hurt quantized models most; brightness
    least (of the 15 ImageNet-C benchmark corruptions).
F4  Nearest-neighbour resizing is the most harmful systematic noise;
    bilinear, cubic and area the least harmful.

What is compared (every comparison is settled by `verdicts`, whose module
docstring states the rules):

* Only the quantization methods of the paper's grid (PTQ, DoReFa, PACT,
  LSQ) count, each **within its method**, and a quantized model is compared
  only with the float model of the same architecture and dataset. Defense
  rows (`fp32:adv`, DQ, LAAQ, adversarial PTQ) belong to the defenses
  section, never to F1-F4.
* F1: per quantized model against float — adversarial accuracy per attack
  family and budget (claim: higher); mean accuracy over the 15 benchmark
  corruptions at severities 1-5 (claim: lower); mean accuracy over all
  (decoder, resize) cells (claim: lower).
* F2: per method, the least-squares trend of the same quantities over the
  method's bit widths (claim: adversarial accuracy falls with bits, the
  others rise); reported as the fitted change from the fewest to the most
  bits.
* F3: per quantized model, accuracy under impulse noise and under glass blur
  (severities 1-5) against each other benchmark corruption (claim: lower),
  and brightness against every other one (claim: higher). The 4 extra
  corruptions are ranked beside, not tested.
* F4: per quantized model, accuracy per resize method (mean over decoders):
  each nearest-neighbour method against every other method (claim: lower),
  and each of bilinear, bicubic and area (PIL and OpenCV) against every
  method outside that set and not nearest (claim: higher).

A finding with no comparison (a suite not run, no float or quantized rows)
is `inconclusive` with a note saying what is missing. Only the newest row
of each cell counts (`results.latest`: a repointed checkpoint's rerun wins),
and a workdir whose rows come from several float checkpoints says so.
"""

import collections
import json
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from robustmq_jax import results
from robustmq_jax.reporting import verdicts
from robustmq_jax.results import outcomes

FINDINGS_FILE = 'findings.json'
QUANT_METHODS = ('ptq', 'dorefa', 'pact', 'lsq')
FLOAT_METHOD = 'float'

# The 15 ImageNet-C benchmark corruptions and the 4 extras
# (robustmq_jax.corruptions.BENCHMARK / EXTRA; repeated here so that the
# report does not import the kernels).
BENCHMARK_CORRUPTIONS = (
    'gaussian_noise', 'shot_noise', 'impulse_noise', 'defocus_blur',
    'glass_blur', 'motion_blur', 'zoom_blur', 'snow', 'frost', 'fog',
    'brightness', 'contrast', 'elastic_transform', 'pixelate',
    'jpeg_compression')
EXTRA_CORRUPTIONS = ('speckle_noise', 'gaussian_blur', 'spatter', 'saturate')
F3_MOST = ('impulse_noise', 'glass_blur')
F3_LEAST = 'brightness'
F4_MILD = ('pil_bilinear', 'cv2_linear', 'pil_bicubic', 'cv2_cubic',
           'cv2_area')

TITLES = {
    'F1': 'Quantized models are more adversarially robust than float, but '
          'less robust to natural corruptions and systematic noise',
    'F2': 'More bits: lower adversarial robustness, higher natural and '
          'systematic robustness',
    'F3': 'Impulse noise and glass blur hurt quantized models most; '
          'brightness least',
    'F4': 'Nearest-neighbour resizing is the most harmful systematic noise; '
          'bilinear, cubic and area the least',
}
_NEEDS = {
    'F1': 'float and quantized rows (PTQ/DoReFa/PACT/LSQ) of one model in the '
          'adversarial, corruption or systematic suite',
    'F2': 'two or more bit widths of one quantization method',
    'F3': 'corruption rows of a quantized model with impulse noise, glass '
          'blur, brightness and other benchmark corruptions',
    'F4': 'systematic rows of a quantized model with nearest-neighbour and '
          'other resize methods',
}


# ------------------------------------------------------------ row selection
def bits_of(precision: str) -> int | None:
  """Weight bits of 'w4a4' or 'w4a4:pact' (None for fp32 and defenses).

  A quantization-method suffix ('w4a4:pact', as configs/robustmq.py writes
  its grid) is a row of that method; defense suffixes ('w4a4:dq') are not.
  """
  base, _, suffix = precision.partition(':')
  if (suffix and suffix not in QUANT_METHODS) or not base.startswith('w'):
    return None
  digits = ''.join(c if c.isdigit() else ' ' for c in base).split()
  return int(digits[0]) if digits else None


def _params_key(params: Mapping[str, Any]) -> str:
  return json.dumps(params, sort_keys=True, default=str)


class _Grid:
  """Rows indexed by (dataset, model) -> (method, precision) -> cells."""

  def __init__(self, rows: Iterable[Mapping[str, Any]]):
    self.cells: dict[tuple, dict[tuple, dict[tuple, Mapping]]] = (
        collections.defaultdict(lambda: collections.defaultdict(dict)))
    for r in results.latest(rows):
      method = r.get('method', '')
      if r['precision'] == 'fp32' and method == FLOAT_METHOD:
        who = (FLOAT_METHOD, 'fp32')
      elif method in QUANT_METHODS and bits_of(r['precision']):
        who = (method, r['precision'])
      else:
        continue  # Defense rows: their own section.
      cell = (r['suite'], r['noise'], _params_key(r.get('params', {})))
      self.cells[(r['dataset'], r['model'])][who][cell] = r

  def architectures(self):
    return sorted(self.cells)

  def float_cells(self, arch) -> dict[tuple, Mapping]:
    return self.cells[arch].get((FLOAT_METHOD, 'fp32'), {})

  def quantized(self, arch) -> list[tuple[str, str]]:
    """(method, precision) pairs, by method then increasing bits."""
    return sorted((w for w in self.cells[arch] if w[0] != FLOAT_METHOD),
                  key=lambda w: (w[0], bits_of(w[1]), w[1]))


def _suite(cells: Mapping[tuple, Mapping], suite: str) -> dict[tuple, Mapping]:
  return {k: r for k, r in cells.items() if k[0] == suite}


def _corruption_cells(cells, names=BENCHMARK_CORRUPTIONS):
  """Corruption cells of `names` at severity >= 1."""
  return {k: r for k, r in _suite(cells, 'corruption').items()
          if k[1] in names
          and int(r.get('params', {}).get('severity', 0)) >= 1}


def _eps_text(params: Mapping[str, Any]) -> str:
  if 'eps_255' in params:
    return f'ε={params["eps_255"]:g}/255'
  if 'eps' in params:
    return f'ε={params["eps"]:g}'
  return ''


def _label(arch, who) -> str:
  return f'{arch[1]} {who[1]} ({who[0]})'


# ------------------------------------------------------------ the findings
def _aggregates(fcells, qcells):
  """(family, claim, common cell keys) of F1/F2's aggregate comparisons."""
  out = []
  for family, select, expect in (
      ('corruption', _corruption_cells, 'lower'),
      ('systematic', lambda c: _suite(c, 'systematic'), 'lower')):
    common = sorted(set(select(fcells)) & set(select(qcells)))
    if common:
      out.append((family, expect, common))
  return out


def _f1(grid: _Grid) -> list[dict[str, Any]]:
  comps = []
  for arch in grid.architectures():
    fcells = grid.float_cells(arch)
    if not fcells:
      continue
    for who in grid.quantized(arch):
      qcells = grid.cells[arch][who]
      label = _label(arch, who)
      for k in sorted(set(_suite(fcells, 'adversarial')) & set(qcells)):
        r_q, r_f = qcells[k], fcells[k]
        comps.append(verdicts.compare(
            r_q, r_f, expect='higher', method=who[0], model=arch[1],
            precision=who[1], family='adversarial', noise=k[1],
            what=f'{label} vs fp32: {k[1]} {_eps_text(r_q["params"])} '
                 'accuracy (claim: higher)'))
      for family, expect, common in _aggregates(fcells, qcells):
        comps.append(verdicts.compare_cells(
            [qcells[k] for k in common], [fcells[k] for k in common],
            expect=expect, method=who[0], model=arch[1], precision=who[1],
            family=family, cells=len(common),
            what=f'{label} vs fp32: mean {family} accuracy over '
                 f'{len(common)} cells (claim: lower)'))
  return comps


def _trend(rows_by_bits, bits, *, expect, what, **extra):
  """A trend comparison from [bits][cells] rows (same cells per bit)."""
  flat = [r for rs in rows_by_bits for r in rs]
  got = outcomes.aligned(flat)
  columns = None
  if got is not None:
    hits, k = got[1], len(rows_by_bits[0])
    columns = [hits[i * k:(i + 1) * k].mean(axis=0)
               for i in range(len(rows_by_bits))]
  accs = [float(np.mean([r['accuracy'] for r in rs])) for rs in rows_by_bits]
  ns = [min(int(r['n']) for r in rs) for rs in rows_by_bits]
  masked = any(bool(r.get('masking_flag')) for r in flat)
  span = max(bits) - min(bits)
  scaled = [(b - min(bits)) / span for b in bits]
  return verdicts.compare_trend(columns, accs, ns, scaled, expect=expect,
                                what=what, masked=masked,
                                bit_widths=list(bits), **extra)


def _f2(grid: _Grid) -> list[dict[str, Any]]:
  comps = []
  for arch in grid.architectures():
    by_method = collections.defaultdict(list)
    for who in grid.quantized(arch):
      by_method[who[0]].append(who)
    for method, whos in by_method.items():
      if len({bits_of(w[1]) for w in whos}) < 2:
        continue
      cells = [grid.cells[arch][w] for w in whos]
      bits = [bits_of(w[1]) for w in whos]
      precs = ', '.join(w[1] for w in whos)
      head = f'{arch[1]} ({method}) over {precs}'
      common_adv = set.intersection(
          *(set(_suite(c, 'adversarial')) for c in cells))
      for k in sorted(common_adv):
        p = cells[0][k]['params']
        comps.append(_trend(
            [[c[k]] for c in cells], bits, expect='lower', method=method,
            model=arch[1], family='adversarial', noise=k[1],
            what=f'{head}: {k[1]} {_eps_text(p)} accuracy, fitted change '
                 'from fewest to most bits (claim: falls)'))
      for family, select in (
          ('corruption', _corruption_cells),
          ('systematic', lambda c: _suite(c, 'systematic'))):
        common = sorted(set.intersection(*(set(select(c)) for c in cells)))
        if not common:
          continue
        comps.append(_trend(
            [[c[k] for k in common] for c in cells], bits, expect='higher',
            method=method, model=arch[1], family=family, cells=len(common),
            what=f'{head}: mean {family} accuracy over {len(common)} cells, '
                 'fitted change from fewest to most bits (claim: rises)'))
  return comps


def _by_noise(cells: Mapping[tuple, Mapping]) -> dict[str, list[Mapping]]:
  out = collections.defaultdict(list)
  for k in sorted(cells):
    out[k[1]].append(cells[k])
  return out


def _versus(name, others, groups, *, expect, label, method, arch, family):
  out = []
  for other in others:
    out.append(verdicts.compare_cells(
        groups[name], groups[other], expect=expect, method=method,
        model=arch[1], family=family, noise=name, other=other,
        what=f'{label}: {name} vs {other} accuracy (claim: {expect})'))
  return out


def _f3(grid: _Grid) -> list[dict[str, Any]]:
  comps = []
  for arch in grid.architectures():
    for who in grid.quantized(arch):
      groups = _by_noise(_corruption_cells(grid.cells[arch][who]))
      kw = dict(label=_label(arch, who), method=who[0], arch=arch,
                family='corruption')
      for name in F3_MOST:
        if name in groups:
          others = [c for c in groups if c not in F3_MOST]
          comps += _versus(name, others, groups, expect='lower', **kw)
      if F3_LEAST in groups:
        others = [c for c in groups if c != F3_LEAST]
        comps += _versus(F3_LEAST, others, groups, expect='higher', **kw)
  return comps


def _f4(grid: _Grid) -> list[dict[str, Any]]:
  comps = []
  for arch in grid.architectures():
    for who in grid.quantized(arch):
      groups = _by_noise(_suite(grid.cells[arch][who], 'systematic'))
      kw = dict(label=_label(arch, who), method=who[0], arch=arch,
                family='systematic')
      nearest = [m for m in groups if 'nearest' in m]
      mild = [m for m in groups if m in F4_MILD]
      for name in nearest:
        others = [m for m in groups if 'nearest' not in m]
        comps += _versus(name, others, groups, expect='lower', **kw)
      for name in mild:
        others = [m for m in groups if m not in F4_MILD and 'nearest' not in m]
        comps += _versus(name, others, groups, expect='higher', **kw)
  return comps


def _f3_ranking(grid: _Grid) -> list[dict[str, Any]]:
  """Mean drop from the model's own clean accuracy per corruption (quantized
  models, severities 1-5): the 15 benchmark corruptions ranked, extras
  beside."""
  drops = collections.defaultdict(list)
  for arch in grid.architectures():
    for who in grid.quantized(arch):
      cells = grid.cells[arch][who]
      # The corruption suite's uncorrupted cell shares the corrupted cells'
      # examples; the clean suite's row is the fallback.
      clean = ([r['accuracy'] for k, r in cells.items()
                if k[0] == 'corruption' and k[1] == 'none'] or
               [r['accuracy'] for k, r in cells.items() if k[0] == 'clean'])
      if not clean:
        continue
      names = BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS
      for name, rs in _by_noise(_corruption_cells(cells, names)).items():
        drops[name].append(clean[0] - float(np.mean([r['accuracy']
                                                     for r in rs])))
  mean = {k: float(np.mean(v)) for k, v in drops.items()}
  ranked = sorted((k for k in mean if k in BENCHMARK_CORRUPTIONS),
                  key=mean.get, reverse=True)
  return ([{'corruption': k, 'drop': mean[k], 'rank': i + 1}
           for i, k in enumerate(ranked)] +
          [{'corruption': k, 'drop': mean[k], 'rank': None}
           for k in EXTRA_CORRUPTIONS if k in mean])


def evaluate(rows: Sequence[Mapping[str, Any]], *,
             alpha: float = verdicts.ALPHA) -> dict[str, Any]:
  """The findings.json structure (see README, "Results format")."""
  grid = _Grid(rows)
  findings = []
  for fid, build in (('F1', _f1), ('F2', _f2), ('F3', _f3), ('F4', _f4)):
    comps = verdicts.decide(build(grid), alpha)
    counts = verdicts.tally(comps)
    entry = {
        'id': fid, 'title': TITLES[fid],
        'verdict': verdicts.finding_verdict(comps),
        'held': counts['held'], 'did_not_hold': counts['did_not_hold'],
        'inconclusive': counts['inconclusive'], 'masked': counts['masked'],
        'comparisons': [verdicts.public(c) for c in comps],
    }
    if not comps:
      entry['note'] = f'not evaluated: needs {_NEEDS[fid]}'
    if fid == 'F3':
      entry['ranking'] = _f3_ranking(grid)
    findings.append(entry)
  out = {'findings': findings, 'alpha': alpha,
         'min_examples': verdicts.MIN_EXAMPLES, 'rules': verdicts.RULES}
  mixed = results.mixed_weights(rows)
  if mixed:
    out['mixed_weights'] = mixed
  return out


def write_json(workdir: str, result: Mapping[str, Any]) -> str:
  """Writes findings.json atomically (non-finite numbers as null)."""
  path = os.path.join(workdir, FINDINGS_FILE)
  with open(path + '.tmp', 'w') as f:
    json.dump(_finite(result), f, indent=1, sort_keys=True, allow_nan=False)
  os.replace(path + '.tmp', path)
  return path


def _finite(x):
  if isinstance(x, dict):
    return {k: _finite(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_finite(v) for v in x]
  if isinstance(x, (np.integer, np.bool_)):
    return x.item()
  if isinstance(x, (float, np.floating)):
    return float(x) if np.isfinite(x) else None
  return x
