"""report.html rendered in headless Chromium: it loads without script errors,
is self-contained, shows the findings, and its tables sort; the example
strip (corruptions at each severity, an adversarial example) is embedded.

Needs Debian's `chromium` (`.ci/run` installs it). Under CI (CI=true) a
missing browser fails the test; elsewhere it is skipped.
"""

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from robustmq_jax.reporting import examples
from robustmq_jax.reporting import report
from robustmq_jax.results import outcomes
from tests import ci

_BROWSERS = ('chromium', 'chromium-browser')


def _browser() -> str:
  for name in _BROWSERS:
    path = shutil.which(name)
    if path:
      return path
  ci.missing('chromium is not installed')


def _chromium(*args: str) -> subprocess.CompletedProcess:
  cmd = [_browser(), '--headless', '--no-sandbox', '--disable-gpu',
         '--disable-dev-shm-usage', '--enable-logging=stderr', '--v=0',
         '--virtual-time-budget=5000', *args]
  return subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                        check=False)


def _hits(acc, n, seed):
  hits = np.zeros(n, bool)
  hits[:round(acc * n)] = True
  return np.random.default_rng(seed).permutation(hits)


def _rows():
  """Float and two LSQ models: clean, PGD, two corruptions, systematic."""
  rows, n = [], 120
  accs = {'fp32': (0.95, 0.30), 'w8a8': (0.94, 0.45), 'w4a4': (0.90, 0.60)}
  for seed, (prec, (clean, adv)) in enumerate(accs.items()):
    method = 'float' if prec == 'fp32' else 'lsq'

    def add(suite, noise, acc, params, seed=seed, prec=prec, method=method,
            **extra):
      hits = _hits(acc, n, seed)
      rows.append(dict(
          dataset='sample', model='vit_tiny_patch4_32', precision=prec,
          method=method, suite=suite, noise=noise, params=params, seed=0,
          n=n, accuracy=float(hits.mean()),
          outcomes=outcomes.encode(np.arange(n), hits), **extra))

    add('clean', 'none', clean, {})
    for eps in (1.0, 4.0):
      add('adversarial', 'pgd_linf', adv / eps, {'eps': eps / 255,
                                                 'eps_255': eps},
          masking_flag=False)
    add('corruption', 'none', clean, {'severity': 0, 'table': '32'})
    for name in ('brightness', 'contrast'):
      for sev in range(1, 6):
        add('corruption', name, clean - 0.05 * sev,
            {'severity': sev, 'table': '32'})
    for dec in ('pil', 'ffmpeg'):
      for m in ('pil_nearest', 'pil_bilinear', 'cv2_area'):
        add('systematic', m, clean - (0.1 if 'nearest' in m else 0.0),
            {'decoder': dec, 'protocol': 'imagenet', 'resize_to': 36,
             'crop': 32})
  return rows


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  folder = tmp_path_factory.mktemp('report')
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv('XDG_CACHE_HOME', str(tmp_path_factory.mktemp('cache')))
    report.write_report(str(folder), _rows())
  return folder


def test_page_is_self_contained(workdir):
  page = (workdir / 'report.html').read_text()
  assert not re.search(r'(src|href)="(https?:)?//', page)
  assert '<link' not in page and '<script src' not in page
  assert page.count('data:image/png;base64,') >= 4 + 2 * 5 + 3


def test_example_strip_embeds_the_run_corruptions_and_an_adversarial(workdir):
  strip = examples.cached_strip(str(workdir), _rows())
  assert strip is not None
  assert [c[0] for c in strip.corruptions] == ['brightness', 'contrast']
  assert all(len(c[2]) == 5 for c in strip.corruptions)
  assert strip.adversarial and strip.adversarial['eps'] == '4/255'
  for name in ('perturbation', 'adversarial'):
    assert os.path.exists(workdir / examples.FOLDER / strip.adversarial[name])


def test_chromium_loads_the_page_without_errors(workdir):
  url = 'file://' + str(workdir / 'report.html')
  got = _chromium('--dump-dom', url)
  assert got.returncode == 0, got.stderr[-2000:]
  dom = got.stdout
  body = re.search(r'<body[^>]*>', dom).group(0)
  assert 'data-ready="1"' in body, 'the inline script did not run to its end'
  tables = int(re.search(r'data-sortable-tables="(\d+)"', body).group(1))
  assert tables >= 5
  assert 'Uncaught' not in got.stderr, got.stderr[-2000:]
  assert not re.search(r'CONSOLE.*(Error|error)', got.stderr), (
      got.stderr[-2000:])
  # The findings and their verdicts are on the page.
  for fid in ('F1', 'F2', 'F3', 'F4'):
    assert f'id="finding-{fid}"' in dom
  assert 'Paper findings checked' in dom and 'Verdict rules' in dom
  assert re.search(r'class="verdict (held|did_not_hold|inconclusive)"', dom)
  assert 'Example images' in dom and 'severity 5' in dom


def test_a_script_error_is_detected(tmp_path):
  """The check above can fail: a page whose script throws never gets
  data-ready and logs 'Uncaught'."""
  page = tmp_path / 'bad.html'
  page.write_text('<html><body><script>undefinedFn();'
                  "document.body.setAttribute('data-ready', '1');"
                  '</script></body></html>')
  got = _chromium('--dump-dom', 'file://' + str(page))
  assert 'data-ready' not in re.search(r'<body[^>]*>', got.stdout).group(0)
  assert 'Uncaught' in got.stderr


def test_screenshot_renders(workdir, tmp_path):
  shot = tmp_path / 'shot.png'
  got = _chromium('--hide-scrollbars', '--window-size=1280,2000',
                  f'--screenshot={shot}', 'file://' + str(workdir /
                                                          'report.html'))
  assert got.returncode == 0, got.stderr[-2000:]
  assert shot.exists() and shot.stat().st_size > 20_000


def test_counts_in_both_reports_agree_with_findings_json(workdir):
  result = json.loads((workdir / 'findings.json').read_text())
  md = (workdir / 'report.md').read_text()
  page = (workdir / 'report.html').read_text()
  for f in result['findings']:
    counts = (f['held'], f['did_not_hold'], f['inconclusive'], f['masked'])
    assert counts == tuple(sum(c['outcome'] == o for c in f['comparisons'])
                           for o in ('held', 'did_not_hold', 'inconclusive',
                                     'masked'))
    html_line = re.search(
        rf'id="finding-{f["id"]}".*?<p class="counts">(\d+) held, (\d+) did '
        r'not hold, (\d+) inconclusive; (\d+) masked', page, re.S)
    assert tuple(map(int, html_line.groups())) == counts, f['id']
    md_line = re.search(
        rf'\*\*{f["id"]}\*\* .*?(\d+) held, (\d+) did not hold, (\d+) '
        r'inconclusive of \d+ counted comparisons; (\d+) masked', md)
    assert tuple(map(int, md_line.groups())) == counts, f['id']
