"""results.jsonl: one row per evaluated cell, keyed, append-only.

Every row carries its full key (dataset, model, precision, method, suite,
noise, params, seed, n). Rows are appended and fsync'ed one at a time by
process 0, so a killed run loses at most the cell it was computing; a torn
last line (killed mid-write) is dropped and truncated on the next start.
"""

import json
import os
from typing import Any, Iterable, Mapping

KEY_FIELDS = ('dataset', 'model', 'precision', 'method', 'suite', 'noise',
              'params', 'seed', 'n')
RESULTS_FILE = 'results.jsonl'


def cell_key(row: Mapping[str, Any]) -> str:
  """Canonical string of a row's key fields (params sorted)."""
  return json.dumps({k: row.get(k) for k in KEY_FIELDS}, sort_keys=True,
                    default=str)


def read_rows(path: str) -> list[dict[str, Any]]:
  """All complete rows of a results file (a torn last line is ignored)."""
  rows = []
  if not os.path.exists(path):
    return rows
  with open(path, 'rb') as f:
    for line in f:
      if not line.endswith(b'\n'):
        break  # Torn write from a killed run.
      try:
        rows.append(json.loads(line))
      except ValueError:
        continue
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
    """Truncates a torn trailing line so later appends stay parseable."""
    if not os.path.exists(self.path):
      return
    with open(self.path, 'rb+') as f:
      data = f.read()
      if data and not data.endswith(b'\n'):
        f.truncate(data.rfind(b'\n') + 1)

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
