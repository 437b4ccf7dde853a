"""The grid progress display: counts, ETA from per-suite rates, summary."""

import io

from robustmq_jax import progress


def test_eta_uses_each_suites_measured_rate_and_lines_are_bounded():
  stream = io.StringIO()
  bar = progress.GridProgress({'clean': 2, 'adversarial': 2}, done=1,
                              stream=stream, every_s=1e9)
  assert bar.total == 5 and bar.eta_s() is None
  bar.cell_done('clean', 100, 1.0)
  assert bar.eta_s() == 3.0  # 3 cells left at the only rate known.
  bar.cell_done('adversarial', 10, 10.0)
  assert bar.eta_s() == 1.0 + 10.0
  assert '[3/5 cells  60%]' in bar.line()
  bar.close()
  lines = stream.getvalue().splitlines()
  assert len(lines) <= 2  # Not a line per cell on a non-terminal.


def test_summary_has_three_lines():
  bar = progress.GridProgress({'clean': 1}, done=0, enabled=False)
  bar.cell_done('clean', 10, 0.5)
  rows = [{'model': 'm', 'precision': p, 'suite': s, 'noise': n,
           'accuracy': a} for p, s, n, a in [
               ('fp32', 'clean', 'none', 0.9), ('w4a4', 'clean', 'none', 0.8),
               ('fp32', 'adversarial', 'fgsm', 0.3)]]
  lines = bar.summary(rows)
  assert len(lines) == 3
  assert lines[0].startswith('1 cell(s): 1 computed')
  assert lines[1] == 'clean accuracy: m: fp32 0.900, w4a4 0.800.'
  assert lines[2] == 'mean accuracy under noise: m: fp32 0.300.'


def test_a_long_cell_shows_its_images():
  stream = io.StringIO()
  bar = progress.GridProgress({'adversarial': 2}, 0, stream=stream,
                              every_s=0.0)
  bar.stage('m w4a4 adversarial', 'adversarial')
  bar.cell_images(64, 1000)
  assert '64/1000 images' in stream.getvalue().splitlines()[-1]
  bar.cell_done('adversarial', 1000, 5.0)
  assert 'images)' not in bar.line()
  bar.close()
