"""Per-example outcomes of a cell: which examples were classified correctly.

A row's `outcomes` field holds two bitsets over example ids, base64 of
`numpy.packbits` (big bit order):

  {"ids_to": N,                  # ids live in [0, N)
   "ids": "<b64>" | omitted,     # which ids were evaluated (omitted: all)
   "correct": "<b64>"}           # correct?, one bit per evaluated id, in
                                 # increasing id order

That is ~N/8 bytes per cell whatever the subset: 6 KiB for the 50,000
ImageNet validation images. Two cells evaluated on overlapping ids can then
be compared example by example (`aligned`).
"""

import base64
from typing import Any, Mapping, Sequence

import numpy as np

FIELD = 'outcomes'


def _pack(bits: np.ndarray) -> str:
  return base64.b64encode(np.packbits(bits.astype(bool))).decode('ascii')


def _unpack(text: str, size: int) -> np.ndarray:
  raw = np.frombuffer(base64.b64decode(text), np.uint8)
  return np.unpackbits(raw, count=size).astype(bool)


def encode(ids: np.ndarray, correct: np.ndarray) -> dict[str, Any]:
  """The `outcomes` field for examples `ids` (any order) and their results."""
  ids = np.asarray(ids, np.int64)
  correct = np.asarray(correct).astype(bool)
  if ids.shape != correct.shape:
    raise ValueError(f'ids {ids.shape} and correct {correct.shape} differ')
  order = np.argsort(ids, kind='stable')
  ids, correct = ids[order], correct[order]
  if ids.size and (ids[0] < 0 or np.any(np.diff(ids) == 0)):
    raise ValueError('example ids must be distinct and non-negative')
  ids_to = int(ids[-1]) + 1 if ids.size else 0
  out = {'ids_to': ids_to, 'correct': _pack(correct)}
  if ids.size != ids_to:  # Not simply 0..N-1.
    member = np.zeros(ids_to, bool)
    member[ids] = True
    out['ids'] = _pack(member)
  return out


def decode(row: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
  """(sorted ids, correct) of a row, or None for rows without outcomes."""
  field = row.get(FIELD)
  if not field:
    return None
  ids_to = int(field['ids_to'])
  if 'ids' in field:
    ids = np.flatnonzero(_unpack(field['ids'], ids_to))
  else:
    ids = np.arange(ids_to)
  return ids, _unpack(field['correct'], ids.size)


def aligned(rows: Sequence[Mapping[str, Any]]
            ) -> tuple[np.ndarray, np.ndarray] | None:
  """Outcomes of several rows on the ids all of them evaluated.

  Returns:
    (common ids, [len(rows), len(ids)] booleans), or None when any row has
    no outcomes (an old workdir) or the rows share no example.
  """
  decoded = [decode(r) for r in rows]
  if not decoded or any(d is None for d in decoded):
    return None
  common = decoded[0][0]
  for ids, _ in decoded[1:]:
    common = np.intersect1d(common, ids, assume_unique=True)
  if not common.size:
    return None
  out = np.stack([c[np.searchsorted(ids, common)] for ids, c in decoded])
  return common, out


def from_sums(sums: Any, name: str = 'correct') -> dict[str, Any] | None:
  """The `outcomes` field from `Evaluator.sums(..., keep=(name,))`' result."""
  kept = getattr(sums, 'outcomes', {}).get(name)
  return None if kept is None else encode(*kept)
