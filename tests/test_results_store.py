"""results.jsonl: keyed rows, skip on rerun, torn and unreadable lines."""

import json
import os
import sys

from etils import epath
from etils.epath import backend
from fsspec.implementations.memory import MemoryFileSystem
import jax
import numpy as np
import pytest

from robustmq_jax import checkpoints
from robustmq_jax import quant
from robustmq_jax import runner
from robustmq_jax.results import CORRUPT_FILE
from robustmq_jax.results import files
from robustmq_jax.results import latest
from robustmq_jax.results import mixed_weights
from robustmq_jax.results import provenance
from robustmq_jax.results import read_rows
from robustmq_jax.results import ResultStore
from tests import test_quant_models as tq
from tests.test_main import sample_config


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


# ------------------------------------------------ workdirs through epath --
# pylint: disable=protected-access
# etils.epath sends gs:// to fsspec; `fake_gcs` registers an in-memory
# filesystem under the 'gs'/'gcs' protocols (etils 1.15 has no memory://
# backend of its own), so the store and caches run their gs:// code paths.


class _FakeGcs(MemoryFileSystem):
  protocol = ('gs', 'gcs')
  store = {}
  pseudo_dirs = ['']

  def __init__(self, *args, **kwargs):
    kwargs.pop('finalize_on_close', None)  # A gcsfs option.
    super().__init__(*args, **kwargs)

  @classmethod
  def _strip_protocol(cls, path):
    for prefix in ('gs://', 'gcs://'):
      if path.startswith(prefix):
        path = path[len(prefix):]
    return '/' + path.strip('/') if path else ''


@pytest.fixture
def fake_gcs(monkeypatch):
  registry = sys.modules['fsspec.registry']._registry
  for name in ('gs', 'gcs'):
    monkeypatch.setitem(registry, name, _FakeGcs)
  backend.fsspec_backend._get_filesystem.cache_clear()
  _FakeGcs.store.clear()
  _FakeGcs.pseudo_dirs[:] = ['']
  yield _FakeGcs.store
  backend.fsspec_backend._get_filesystem.cache_clear()


def _objects(store, prefix='/bucket/run/'):
  return sorted(k[len(prefix):] for k in store if k.startswith(prefix))


def test_store_on_gs_rewrites_whole_objects_and_resumes(fake_gcs):
  store = ResultStore('gs://bucket/run', sync_every_s=0)
  store.append(_row())
  store.append(_row(noise='x'))
  assert _objects(fake_gcs) == ['results.jsonl']  # No temporary objects.
  again = ResultStore('gs://bucket/run')
  assert [r['noise'] for r in again.rows] == ['none', 'x']
  assert again.has(_row(acc=0.1)) and not again.has(_row(noise='y'))
  # Buffered: nothing reaches the bucket before sync_every_s or flush().
  again.append(_row(noise='y'))
  assert len(read_rows('gs://bucket/run/results.jsonl')) == 2
  again.flush()
  assert [r['noise'] for r in read_rows('gs://bucket/run/results.jsonl')] == [
      'none', 'x', 'y']
  reader = ResultStore('gs://bucket/other', writer=False)
  reader.append(_row())
  reader.flush()
  assert not _objects(fake_gcs, '/bucket/other/')


def test_store_on_gs_repairs_torn_and_unreadable_lines(fake_gcs):
  path = epath.Path('gs://bucket/run/results.jsonl')
  path.parent.mkdir(parents=True, exist_ok=True)
  good = json.dumps(_row()) + '\n'
  path.write_text(good + '{"model": "m", "accura\n' + good[:20])
  store = ResultStore('gs://bucket/run')
  assert len(store.rows) == 1
  assert path.read_text() == good
  assert (path.parent / CORRUPT_FILE).read_text() == '{"model": "m", "accura\n'


def test_checkpoints_and_folder_hash_on_gs_match_local(fake_gcs, tmp_path):
  variables = {'params': {'dense': {'kernel': np.arange(6.).reshape(2, 3)}}}
  for where in (str(tmp_path / 'ckpt'), 'gs://bucket/ckpt'):
    checkpoints.save(where, model='resnet20_cifar', num_classes=10,
                     variables=variables, meta={'note': 1})
  assert _objects(fake_gcs, '/bucket/ckpt/') == ['model.json',
                                                 'variables.msgpack']
  _, loaded, spec = checkpoints.load('gs://bucket/ckpt')
  np.testing.assert_array_equal(loaded['params']['dense']['kernel'],
                                variables['params']['dense']['kernel'])
  assert spec['meta'] == {'note': 1}
  assert provenance.folder_hash('gs://bucket/ckpt') == provenance.folder_hash(
      str(tmp_path / 'ckpt'))
  assert sorted(os.listdir(tmp_path / 'ckpt')) == ['model.json',
                                                   'variables.msgpack']


def test_write_atomic_uses_a_temporary_name_per_process_and_call(tmp_path):
  target = epath.Path(tmp_path) / 'sub' / 'f.bin'
  names = {files._temp_name(target).name for _ in range(3)}
  assert len(names) == 3
  assert all(str(os.getpid()) in n and n.startswith('.f.bin.tmp-')
             for n in names)
  files.write_atomic(target, b'a')
  files.write_atomic(target, 'b')
  assert target.read_bytes() == b'b'
  assert os.listdir(tmp_path / 'sub') == ['f.bin']


def test_quantized_model_cache_on_gs_is_written_once_and_reused(fake_gcs):
  qc = quant.default_config().to_dict()
  qc.update(num_calib_batches=1, calib_batch_size=32, eval_int8=False)

  def request(train_arrays):
    r = tq._request(epath.Path('/unused'), qc, train_arrays=train_arrays)
    r.cache_dir = 'gs://bucket/run/cache/quant'
    return r

  first = quant.build(request(tq._data))
  cached = _objects(fake_gcs, '/bucket/run/cache/quant/resnet20_cifar/')
  assert len(cached) == 2 and all(
      c.endswith(('/quant.json', '/tensors.safetensors')) for c in cached)

  def no_data():
    raise AssertionError('should have loaded the cached checkpoint')

  again = quant.build(request(no_data))
  for a, b in zip(jax.tree.leaves(first['variables']),
                  jax.tree.leaves(again['variables'])):
    np.testing.assert_array_equal(a, b)


def test_main_job_into_a_gs_workdir_writes_rows_and_report(fake_gcs):
  rows = runner.run(sample_config(), 'gs://bucket/run')
  written = _objects(fake_gcs)
  for f in ('results.jsonl', 'results.csv', 'findings.json', 'report.md',
            'report.html'):
    assert f in written, (f, written)
  assert not [f for f in written if '.tmp' in f]
  assert read_rows('gs://bucket/run/results.jsonl') == rows and len(rows) == 1
  runner.run(sample_config(), 'gs://bucket/run')  # A rerun adds nothing.
  assert len(read_rows('gs://bucket/run/results.jsonl')) == 1
