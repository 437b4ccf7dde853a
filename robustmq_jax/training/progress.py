"""Progress of a training run: steps done/total, images/s, ETA and loss.

The training twin of `robustmq_jax.progress.GridProgress` (which counts a
grid's cells): one line every `every_s` seconds and at each checkpoint, on
stderr, from process 0. The rate is measured from the end of the first
step (which compiles), so the ETA is not inflated by the compile.
"""

import sys
import time
from typing import TextIO


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  if seconds >= 3600:
    return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'
  return (f'{seconds // 60}m{seconds % 60:02d}s' if seconds >= 60 else
          f'{seconds}s')


class StepProgress:
  """Steps done/total, images/s, ETA and loss, a line every `every_s`."""

  def __init__(self, start: int, total: int, batch: int, *, every_s: float,
               stream: TextIO | None = None, enabled: bool = True):
    self.start_step, self.total, self.batch = start, total, batch
    self.every_s, self.enabled = every_s, enabled
    self.stream = stream or sys.stderr
    self.t0 = time.perf_counter()
    self.rate_from = None  # (step, time) after the first (compiling) step.
    self.last = -float('inf')

  def update(self, step: int, loss: float | None, force: bool = False):
    now = time.perf_counter()
    if self.rate_from is None and step > self.start_step:
      self.rate_from = (step, now)
    if not self.enabled or (not force and now - self.last < self.every_s):
      return
    self.last = now
    parts = [f'[QAT step {step}/{self.total} '
             f'{100.0 * step / max(self.total, 1):3.0f}%]']
    if loss is not None:
      parts.append(f'loss {loss:.4f}')
    s0, t0 = self.rate_from or (step, now)
    if step > s0 and now > t0:
      rate = (step - s0) / (now - t0)
      parts.append(f'{rate * self.batch:.0f} img/s')
      parts.append(f'ETA {_duration((self.total - step) / rate)}')
    else:
      parts.append('ETA ?')
    parts.append(f'elapsed {_duration(now - self.t0)}')
    self.stream.write('  '.join(parts) + '\n')
    self.stream.flush()
