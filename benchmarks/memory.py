r"""Peak memory maps and RSS of the main job as the precision grid grows.

  python benchmarks/memory.py --config=configs/vit_w4.py:sample \
      --grid=fp32,w4a4 --grid=fp32,w8a8,w6a6,w4a4,w2a2

Runs the main job once per `--grid` (a fresh workdir each, in a subprocess)
and samples the process's memory maps (/proc/PID/maps lines) and resident
set every `--every_s` seconds; its peak RSS is also read from VmHWM. Prints a
Markdown table and, on the last line, `ratio maps X rss Y`: the last grid's
peaks over the first's. A run whose compiled programs pile up grows with
the number of precisions; a flat run stays near 1 (issue: < 1.5 for 5 vs 2
precisions). Linux only (reads /proc).
"""

import os
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

_CONFIG = flags.DEFINE_string('config', 'configs/vit_w4.py:sample',
                              'Config of the main job.')
_GRID = flags.DEFINE_multi_string(
    'grid', ['fp32,w4a4', 'fp32,w8a8,w6a6,w4a4,w2a2'],
    'Precision lists to compare (comma-separated), first is the baseline.')
_EXTRA = flags.DEFINE_multi_string(
    'override', [], 'Extra --config.x=y overrides passed to the main job.')
_EVERY = flags.DEFINE_float('every_s', 0.5, 'Sampling period in seconds.')
_CACHE = flags.DEFINE_string(
    'compilation_cache', 'off', "The main job's --compilation_cache. Off by "
    'default: with it on, the later grids would load what the first one '
    'compiled instead of compiling it, and look smaller than they are.')


def _maps(pid: int) -> int:
  try:
    with open(f'/proc/{pid}/maps', 'rb') as f:
      return sum(1 for _ in f)
  except OSError:
    return 0


def _status_kib(pid: int, field: str) -> int:
  try:
    with open(f'/proc/{pid}/status') as f:
      for line in f:
        if line.startswith(field + ':'):
          return int(line.split()[1])
  except OSError:
    pass
  return 0


def measure(config: str, precisions: str, extra: list[str],
            every_s: float, compilation_cache: str = 'off'
            ) -> dict[str, float]:
  """Runs the main job; returns peak maps, peak RSS (MiB) and wall time."""
  with tempfile.TemporaryDirectory() as workdir, tempfile.TemporaryFile(
      'w+') as log:
    cmd = [sys.executable, '-m', 'robustmq_jax.main', f'--config={config}',
           f'--workdir={workdir}', f'--config.precisions={precisions}',
           f'--compilation_cache={compilation_cache}'] + [
               f'--config.{o}' for o in extra]
    start = time.perf_counter()
    # stderr to a file: a pipe nobody reads while polling would block the
    # job once its progress output filled the pipe's buffer.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log,
                            text=True)
    peak_maps = peak_rss = 0
    while proc.poll() is None:
      peak_maps = max(peak_maps, _maps(proc.pid))
      peak_rss = max(peak_rss, _status_kib(proc.pid, 'VmHWM'),
                     _status_kib(proc.pid, 'VmRSS'))
      time.sleep(every_s)
    if proc.returncode:
      log.seek(0)
      raise SystemExit(f'main job failed ({proc.returncode}): '
                       f'{log.read()[-2000:]}')
    return {'maps': peak_maps, 'rss_mib': peak_rss / 1024,
            'wall_s': time.perf_counter() - start}


def main(argv):
  del argv
  if len(_GRID.value) < 2:
    raise app.UsageError('--grid needs at least two precision lists.')
  results = []
  for grid in _GRID.value:
    r = measure(_CONFIG.value, grid, _EXTRA.value, _EVERY.value,
                _CACHE.value)
    results.append((grid, r))
  print('| precisions | peak maps | peak RSS (MiB) | wall (s) |')
  print('|---|---|---|---|')
  for grid, r in results:
    print(f'| {grid} | {r["maps"]} | {r["rss_mib"]:.0f} | '
          f'{r["wall_s"]:.0f} |')
  first, last = results[0][1], results[-1][1]
  print(f'ratio maps {last["maps"] / max(first["maps"], 1):.2f} '
        f'rss {last["rss_mib"] / max(first["rss_mib"], 1):.2f}')


if __name__ == '__main__':
  if not os.path.isdir('/proc'):
    sys.exit('benchmarks/memory.py reads /proc: Linux only.')
  app.run(main)
