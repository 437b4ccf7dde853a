"""The terminal of the main job: one progress display for the whole grid.

`GridProgress` knows every cell of the run up front (done and to do). It
shows cells done/total, images/s and an ETA over the remaining cells from
the rates measured so far (per suite, as suites differ by orders of
magnitude), on one line rewritten in place on a terminal, or as a line every
`every_s` seconds otherwise; a background heartbeat keeps it current during
long cells and compiles (with the time spent in the current cell). Per-row
lines are logged at INFO, below the
default verbosity of the main job (`-v 0` shows them). `summary` is the
three lines the run ends with.
"""

import collections
import sys
import threading
import time
from typing import Any, Iterable, Mapping, TextIO


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  if seconds >= 3600:
    return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'
  if seconds >= 60:
    return f'{seconds // 60}m{seconds % 60:02d}s'
  return f'{seconds}s'


class GridProgress:
  """Cells done/total, images/s and ETA of a run, on one line."""

  def __init__(self, todo_by_suite: Mapping[str, int], done: int, *,
               stream: TextIO | None = None, every_s: float = 30.0,
               enabled: bool = True):
    self.todo = collections.Counter(todo_by_suite)
    self.total = sum(self.todo.values()) + done
    self.done_before = done
    self.computed = 0
    self.images = 0
    self.spent = collections.Counter()    # suite -> seconds
    self.cells = collections.Counter()    # suite -> cells computed
    self.stream = stream or sys.stderr
    self.every_s = every_s
    self.enabled = enabled
    self.tty = enabled and getattr(self.stream, 'isatty', lambda: False)()
    self.start = time.perf_counter()
    self._last_print = -float('inf')
    self._stage = ''
    self._width = 0
    self._cell_start = self.start
    self._cell_images = None  # (done, total) of the cell under way
    self._suite = None
    self._lock = threading.Lock()
    self._stop = threading.Event()
    self._thread = None
    if self.enabled:
      self._thread = threading.Thread(target=self._beat, daemon=True,
                                      name='GridProgress')
      self._thread.start()

  def _beat(self) -> None:
    while not self._stop.wait(1.0 if self.tty else self.every_s):
      self._show(force=self.tty)

  def stage(self, text: str, suite: str | None = None) -> None:
    """What is being computed now (model, precision[, suite])."""
    self._stage = text
    self._suite = suite
    self._cell_images = None
    self._cell_start = time.perf_counter()
    self._show(force=self.tty)

  def cell_images(self, done: int, total: int | None) -> None:
    """Images evaluated so far in the cell under way (`Evaluator` hook)."""
    self._cell_images = (done, total)
    self._show(force=False)

  def cell_done(self, suite: str, images: int, seconds: float) -> None:
    self._cell_images = None
    self.computed += 1
    self.images += images
    self.spent[suite] += seconds
    self.cells[suite] += 1
    self.todo[suite] -= 1
    self._cell_start = time.perf_counter()
    self._show(force=self.tty)

  def eta_s(self) -> float | None:
    """Seconds left: each suite's remaining cells at its measured rate."""
    if not self.computed:
      return None
    overall = sum(self.spent.values()) / self.computed
    left, current = 0.0, 0.0
    for suite, n in self.todo.items():
      if n > 0:
        rate = (self.spent[suite] / self.cells[suite] if self.cells[suite]
                else overall)
        left += n * rate
        if suite == self._suite:
          current = rate
    # The cell under way is partly done (up to its expected time).
    in_cell = time.perf_counter() - self._cell_start
    return max(0.0, left - min(in_cell, current))

  def line(self) -> str:
    elapsed = time.perf_counter() - self.start
    done = self.done_before + self.computed
    pct = 100.0 * done / self.total if self.total else 100.0
    parts = [f'[{done}/{self.total} cells {pct:3.0f}%]']
    if elapsed > 0 and self.images:
      parts.append(f'{self.images / elapsed:.0f} img/s')
    eta = self.eta_s()
    parts.append(f'ETA {_duration(eta)}' if eta is not None else 'ETA ?')
    parts.append(f'elapsed {_duration(elapsed)}')
    if self._stage:
      in_cell = time.perf_counter() - self._cell_start
      where = []
      if self._cell_images and self._cell_images[1]:
        where.append(f'{self._cell_images[0]}/{self._cell_images[1]} images')
      if in_cell >= 10:
        where.append(f'{_duration(in_cell)} in this cell')
      parts.append(self._stage + (f' ({", ".join(where)})' if where else ''))
    return '  '.join(parts)

  def _show(self, force: bool = False) -> None:
    if not self.enabled:
      return
    with self._lock:
      now = time.perf_counter()
      if not force and now - self._last_print < self.every_s:
        return
      self._last_print = now
      text = self.line()
      if self.tty:
        pad = max(0, self._width - len(text))
        self.stream.write('\r' + text + ' ' * pad)
        self._width = len(text)
      else:
        self.stream.write(text + '\n')
      self.stream.flush()

  def close(self) -> None:
    """Ends the progress line (a final update on a terminal)."""
    if not self.enabled or self._stop.is_set():
      return
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    self._stage = ''
    if self.tty:
      self._show(force=True)
      self.stream.write('\n')
    elif self.computed:
      self.stream.write(self.line() + '\n')
    self.stream.flush()

  def summary(self, rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Three lines: the cells, clean accuracy, accuracy under noise."""
    rows = list(rows)
    elapsed = time.perf_counter() - self.start
    rate = f', {self.images / elapsed:.0f} img/s' if self.images else ''
    lines = [f'{self.total} cell(s): {self.computed} computed in '
             f'{_duration(elapsed)}{rate}, {self.done_before} already done.']
    lines.append('clean accuracy: ' + _by_precision(
        r for r in rows if r.get('suite') == 'clean'
        and r.get('noise') == 'none'))
    lines.append('mean accuracy under noise: ' + _by_precision(
        r for r in rows if r.get('noise') not in (None, 'none')))
    return lines


def _by_precision(rows: Iterable[Mapping[str, Any]], limit: int = 8) -> str:
  acc = collections.defaultdict(list)
  for r in rows:
    if isinstance(r.get('accuracy'), (int, float)):
      acc[(r.get('model'), r.get('precision'))].append(r['accuracy'])
  if not acc:
    return 'no rows.'
  models = {m for m, _ in acc}
  parts = [(f'{m} ' if len(models) > 1 else '') +
           f'{p} {sum(v) / len(v):.3f}' for (m, p), v in acc.items()]
  more = f' (+{len(parts) - limit} more in the report)' if len(
      parts) > limit else ''
  prefix = f'{next(iter(models))}: ' if len(models) == 1 else ''
  return prefix + ', '.join(parts[:limit]) + more + '.'
