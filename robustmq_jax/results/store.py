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
"""

import json
import os
from typing import Any, Iterable, Mapping

from absl import logging

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


def read_rows(path: str) -> list[dict[str, Any]]:
  """All readable complete rows of a results file (torn last line ignored)."""
  rows = []
  if not os.path.exists(path):
    return rows
  with open(path, 'rb') as f:
    for line in f:
      if not line.endswith(b'\n'):
        break  # Torn write from a killed run.
      row = _parse(line)
      if row is not None:
        rows.append(row)
  return rows


class ResultStore:
  """The workdir's results file. Only the writer process appends."""

  def __init__(self, workdir: str, *, writer: bool = True):
    self.path = os.path.join(workdir, RESULTS_FILE)
    self.writer = writer
    if writer:
      os.makedirs(workdir, exist_ok=True)
      self._repair()
    self.rows = read_rows(self.path)
    self._keys = {cell_key(r) for r in self.rows}

  def _repair(self) -> None:
    """Drops a torn last line; moves unreadable lines to CORRUPT_FILE."""
    if not os.path.exists(self.path):
      return
    with open(self.path, 'rb') as f:
      data = f.read()
    if data and not data.endswith(b'\n'):
      data = data[:data.rfind(b'\n') + 1]  # Torn write from a killed run.
      with open(self.path, 'rb+') as f:
        f.truncate(len(data))
    lines = data.splitlines(keepends=True)
    bad = [l for l in lines if l.strip() and _parse(l) is None]
    if not bad:
      return
    corrupt = os.path.join(os.path.dirname(self.path), CORRUPT_FILE)
    with open(corrupt, 'ab') as f:
      f.writelines(bad)
      f.flush()
      os.fsync(f.fileno())
    tmp = self.path + '.tmp'
    with open(tmp, 'wb') as f:
      f.writelines(l for l in lines if l.strip() and _parse(l) is not None)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, self.path)
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
    line = json.dumps(row, sort_keys=True, default=_jsonable) + '\n'
    with open(self.path, 'a') as f:
      f.write(line)
      f.flush()
      os.fsync(f.fileno())

  def extend(self, rows: Iterable[Mapping[str, Any]]) -> None:
    for r in rows:
      self.append(r)


def _jsonable(x):
  try:
    return x.item()  # numpy / jax scalars
  except AttributeError:
    return str(x)
