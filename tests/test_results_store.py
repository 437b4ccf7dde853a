"""results.jsonl: keyed rows, skip on rerun, torn and unreadable lines."""

import json
import os

from robustmq_jax.results import CORRUPT_FILE
from robustmq_jax.results import latest
from robustmq_jax.results import mixed_weights
from robustmq_jax.results import provenance
from robustmq_jax.results import read_rows
from robustmq_jax.results import ResultStore


def _row(noise='none', acc=0.5, **kw):
  row = {'dataset': 'sample', 'model': 'm', 'precision': 'fp32',
         'method': 'float', 'suite': 'clean', 'noise': noise, 'params': {},
         'seed': 0, 'n': 10, 'accuracy': acc}
  row.update(kw)
  return row


def test_append_then_reload_skips_finished(tmp_path):
  store = ResultStore(str(tmp_path))
  store.append(_row())
  store.append(_row(acc=0.9))  # Same key: not written twice.
  store.append(_row(noise='x'))
  again = ResultStore(str(tmp_path))
  assert len(again.rows) == 2
  assert again.has(_row(acc=0.1))  # Metrics are not part of the key.
  assert not again.has(_row(n=11))  # n is.
  assert not again.has(_row(params={'eps': 1}))


def test_param_order_does_not_matter(tmp_path):
  store = ResultStore(str(tmp_path))
  store.append(_row(params={'a': 1, 'b': 2}))
  assert store.has(_row(params={'b': 2, 'a': 1}))


def test_torn_last_line_is_dropped_and_repaired(tmp_path):
  store = ResultStore(str(tmp_path))
  store.append(_row())
  with open(store.path, 'a') as f:
    f.write(json.dumps(_row(noise='torn'))[:30])  # Killed mid-write.
  assert len(read_rows(store.path)) == 1
  again = ResultStore(str(tmp_path))
  again.append(_row(noise='y'))
  rows = read_rows(again.path)
  assert [r['noise'] for r in rows] == ['none', 'y']
  with open(again.path) as f:
    assert all(json.loads(line) for line in f)


def test_non_writer_never_touches_the_file(tmp_path):
  store = ResultStore(str(tmp_path / 'w'), writer=False)
  store.append(_row())
  assert not os.path.exists(store.path)


def test_unreadable_middle_lines_move_to_the_corrupt_file(tmp_path, caplog):
  store = ResultStore(str(tmp_path))
  for noise in ('a', 'b', 'c'):
    store.append(_row(noise=noise))
  with open(store.path) as f:
    lines = f.readlines()
  garbage = ['{"model": "m", "accura\n', '[1, 2]\n']
  with open(store.path, 'w') as f:
    f.writelines([lines[0], garbage[0], lines[1], garbage[1], lines[2]])
  with caplog.at_level('WARNING'):
    again = ResultStore(str(tmp_path))
  assert [r['noise'] for r in again.rows] == ['a', 'b', 'c']
  with open(tmp_path / CORRUPT_FILE) as f:
    assert f.readlines() == garbage
  with open(again.path) as f:
    assert f.readlines() == lines
  warnings = [r.getMessage() for r in caplog.records
              if r.levelname == 'WARNING']
  assert len(warnings) == 1 and '2 unreadable line(s)' in warnings[0]


def test_provenance_is_part_of_the_key_and_latest_keeps_the_newest(tmp_path):
  store = ResultStore(str(tmp_path))
  old = _row(acc=0.1, weights={'float': 'aaa', 'quant': None})
  new = _row(acc=0.9, weights={'float': 'bbb', 'quant': None})
  store.append(old)
  assert not store.has(new)
  store.append(new)
  store.append(_row(noise='other', weights={'float': 'bbb', 'quant': None}))
  assert len(ResultStore(str(tmp_path)).rows) == 3
  newest = latest(store.rows)
  assert sorted((r['noise'], r['accuracy']) for r in newest) == [
      ('none', 0.9), ('other', 0.5)]
  assert mixed_weights(store.rows) == {'m': ['aaa', 'bbb']}
  assert mixed_weights(newest) == {}


def test_tree_hash_follows_content():
  import numpy as np  # pylint: disable=g-import-not-at-top
  a = {'dense': {'kernel': np.ones((2, 3), np.float32)}}
  b = {'dense': {'kernel': np.ones((2, 3), np.float32)}}
  assert provenance.tree_hash(a) == provenance.tree_hash(b)
  b['dense']['kernel'][0, 0] = 2
  assert provenance.tree_hash(a) != provenance.tree_hash(b)
  assert provenance.tree_hash({'k': np.ones(6, np.float32)}) != (
      provenance.tree_hash({'k': np.ones((2, 3), np.float32)}))


def test_folder_hash_follows_content_not_path(tmp_path):
  for d in ('a', 'b'):
    (tmp_path / d).mkdir()
    (tmp_path / d / 'variables.msgpack').write_bytes(b'weights')
  assert provenance.folder_hash(str(tmp_path / 'a')) == provenance.folder_hash(
      str(tmp_path / 'b'))
  (tmp_path / 'b' / 'variables.msgpack').write_bytes(b'retrained')
  assert provenance.folder_hash(str(tmp_path / 'a')) != provenance.folder_hash(
      str(tmp_path / 'b'))
