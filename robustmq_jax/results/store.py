"""results.jsonl: one row per evaluated cell, keyed, append-only.

Every row carries its full key: the cell (dataset, model, precision, method,
suite, noise, params, seed, n) and its provenance (`weights`: hashes of the
float and quantized weights; `data`: source, size, preprocessing; see
provenance.py). A rerun with other weights or data adds rows beside the old
ones; `latest(rows)` keeps the newest row per cell, which is what a report
shows, and `mixed_weights(rows)` says which models' rows in a workdir come
from more than one set of weights.

Rows are appended and fsync'ed one at a time by process 0, so a killed run
loses at most the cell it was computing; a torn last line (killed mid-write)
is dropped and truncated on the next start, and unreadable lines elsewhere
are moved to results.corrupt.jsonl (their cells are then recomputed).

A workdir on an object store (gs://, through etils.epath; files.py) cannot be
appended to: there the whole file is rewritten, at most every
`sync_every_s` seconds and on `flush()` (the runner flushes at the end of a
run and when it stops), so a killed run loses at most that much.
"""

import json
import os
import time
from typing import Any, Iterable, Mapping, Sequence

from absl import logging

from robustmq_jax.results import files

CELL_FIELDS = ('dataset', 'model', 'precision', 'method', 'suite', 'noise',
               'params', 'seed', 'n')
PROVENANCE_FIELDS = ('weights', 'data')
KEY_FIELDS = CELL_FIELDS + PROVENANCE_FIELDS
RESULTS_FILE = 'results.jsonl'
CORRUPT_FILE = 'results.corrupt.jsonl'


def cell_key(row: Mapping[str, Any]) -> str:
  """Canonical string of a row's full key (cell and provenance)."""
  return json.dumps({k: row.get(k) for k in KEY_FIELDS}, sort_keys=True,
                    default=str)


def cell_id(row: Mapping[str, Any]) -> str:
  """Canonical string of a row's cell, whatever weights and data produced it."""
  return json.dumps({k: row.get(k) for k in CELL_FIELDS}, sort_keys=True,
                    default=str)


def latest(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
  """The newest row of every cell (file order: a later row is newer).

  Reports call this: after a checkpoint was repointed, a workdir holds the
  old and the new rows of a cell, and the new ones win.
  """
  by_cell = {}
  for r in rows:
    by_cell.pop(cell_id(r), None)  # Keep file order of the newest rows.
    by_cell[cell_id(r)] = r
  return list(by_cell.values())


def mixed_weights(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
  """{model: [float weight hashes]} for models evaluated with several."""
  seen = {}
  for r in rows:
    h = (r.get('weights') or {}).get('float') or 'unrecorded'
    hashes = seen.setdefault(r.get('model'), [])
    if h not in hashes:
      hashes.append(h)
  return {m: hs for m, hs in seen.items() if len(hs) > 1}


def _parse(line: bytes) -> dict[str, Any] | None:
  try:
    row = json.loads(line)
  except ValueError:
    return None
  return row if isinstance(row, dict) else None


def read_rows(path: files.PathLike) -> list[dict[str, Any]]:
  """All readable complete rows of a results file (torn last line ignored)."""
  rows = []
  path = files.path(path)
  if not path.exists():
    return rows
  for line in path.read_bytes().splitlines(keepends=True):
    if not line.endswith(b'\n'):
      break  # Torn write from a killed run.
    row = _parse(line)
    if row is not None:
      rows.append(row)
  return rows


def merge(row_lists: Sequence[Iterable[Mapping[str, Any]]]
          ) -> list[dict[str, Any]]:
  """The rows of several workdirs as one list, each full key once.

  Workdirs of one study split with `config.grid_shard` hold disjoint cells;
  a row stored in several (the same cell, weights and data) is kept once,
  from the first list that has it. Order: the lists one after another.
  """
  seen, out = set(), []
  for rows in row_lists:
    for r in rows:
      k = cell_key(r)
      if k not in seen:
        seen.add(k)
        out.append(dict(r))
  return out


def _line(row: Mapping[str, Any]) -> str:
  return json.dumps(row, sort_keys=True, default=_jsonable) + '\n'


class ResultStore:
  """The workdir's results file. Only the writer process appends.

  `workdir` is a local folder or an epath location (gs://...); see the
  module docstring for how rows reach an object store.
  """

  def __init__(self, workdir: files.PathLike, *, writer: bool = True,
               sync_every_s: float = 60.0):
    self.path = files.path(workdir) / RESULTS_FILE
    self.writer = writer
    self.local = files.is_local(self.path)
    self.sync_every_s = sync_every_s
    self._unsynced = False
    self._synced_at = time.monotonic()
    if writer:
      self.path.parent.mkdir(parents=True, exist_ok=True)
      self._repair()
      if not self.path.exists():  # A job with no cells still leaves one.
        files.write_atomic(self.path, b'')
    self.rows = read_rows(self.path)
    self._keys = {cell_key(r) for r in self.rows}
    self._lines = [_line(r) for r in self.rows] if not self.local else None

  def _repair(self) -> None:
    """Drops a torn last line; moves unreadable lines to CORRUPT_FILE."""
    if not self.path.exists():
      return
    data = self.path.read_bytes()
    torn = bool(data) and not data.endswith(b'\n')
    if torn:
      data = data[:data.rfind(b'\n') + 1]  # Torn write from a killed run.
    lines = data.splitlines(keepends=True)
    bad = [l for l in lines if l.strip() and _parse(l) is None]
    if bad:
      corrupt = self.path.parent / CORRUPT_FILE
      before = corrupt.read_bytes() if corrupt.exists() else b''
      files.write_atomic(corrupt, before + b''.join(bad))
      data = b''.join(l for l in lines if l.strip() and _parse(l) is not None)
    if torn or bad:
      files.write_atomic(self.path, data)
    if bad:
      logging.warning('%s: %d unreadable line(s) moved to %s; their cells '
                      'will be recomputed.', self.path, len(bad), corrupt)

  def has(self, key: Mapping[str, Any]) -> bool:
    return cell_key(key) in self._keys

  def append(self, row: Mapping[str, Any]) -> None:
    """Adds a row (skipped if its key is already stored)."""
    k = cell_key(row)
    if k in self._keys:
      return
    self._keys.add(k)
    self.rows.append(dict(row))
    if not self.writer:
      return
    line = _line(row)
    if not self.local:
      self._lines.append(line)
      self._unsynced = True
      if time.monotonic() - self._synced_at >= self.sync_every_s:
        self.flush()
      return
    with open(self.path, 'a') as f:
      f.write(line)
      f.flush()
      os.fsync(f.fileno())

  def extend(self, rows: Iterable[Mapping[str, Any]]) -> None:
    for r in rows:
      self.append(r)

  def flush(self) -> None:
    """Writes rows not yet on an object store (a no-op for local files)."""
    if self.writer and self._unsynced:
      files.write_atomic(self.path, ''.join(self._lines))
      self._unsynced = False
      self._synced_at = time.monotonic()


def _jsonable(x):
  try:
    return x.item()  # numpy / jax scalars
  except AttributeError:
    return str(x)
