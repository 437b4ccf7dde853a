"""The QAT job, `python -m robustmq_jax.train` (configs/qat.py).

The runs go through the real command line in subprocesses with 2 fake CPU
devices (XLA_FLAGS), sharing one persistent compilation cache so that only
the first run compiles the training step. The default runs use `:smoke` on a
tiny ResNet (one block per stage, random weights: the property under test is
resume, not accuracy); `:smoke` itself, with its 60 steps, is the slow test.
"""

import json
import os
import shutil
import subprocess
import sys
import types

import jax
import numpy as np
import pytest
from safetensors import numpy as st_numpy

from robustmq_jax import checkpoints
from robustmq_jax import models
from robustmq_jax import quant
from robustmq_jax import settings as settings_lib
from robustmq_jax.data import fake_imagenet
from robustmq_jax.data import train_stream
from robustmq_jax.data.folder import FolderDataset
from robustmq_jax.data.sample import SampleDataset
from robustmq_jax.quant import storage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = '--config=configs/qat.py:smoke'
_ENV = {'JAX_PLATFORMS': 'cpu',
        'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}
# Runs the job's command line once per argument list, each in a forked
# child (the imports happen once): [{"code", "stdout", "stderr"}, ...].
_BATCH = r'''
import json, os, sys, tempfile
from robustmq_jax import train
out = []
with tempfile.TemporaryDirectory() as tmp:
  for argv in json.loads(sys.argv[1]):
    paths = [os.path.join(tmp, n) for n in ('out', 'err')]
    pid = os.fork()
    if pid == 0:
      code = 1
      try:
        for p, fd in zip(paths, (1, 2)):
          os.dup2(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        sys.argv = ['robustmq_jax/train.py'] + argv
        train.entry()
        code = 0
      except SystemExit as e:
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
      finally:
        sys.stdout.flush(); sys.stderr.flush(); os._exit(code)
    _, status = os.waitpid(pid, 0)
    texts = [open(p).read() for p in paths]
    out.append({'code': os.waitstatus_to_exitcode(status),
                'stdout': texts[0], 'stderr': texts[1]})
print(json.dumps(out))
'''


def _train(*args: str, cache: str) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, '-m', 'robustmq_jax.train', *args,
       f'--compilation_cache={cache}'], cwd=ROOT, capture_output=True,
      text=True, timeout=900, env=dict(os.environ, **_ENV))


def _cli_batch(cases: list[list[str]]) -> list[dict]:
  p = subprocess.run([sys.executable, '-c', _BATCH, json.dumps(cases)],
                     cwd=ROOT, capture_output=True, text=True, timeout=600,
                     env=dict(os.environ, **_ENV), check=True)
  return json.loads(p.stdout.splitlines()[-1])


def _tensors(folder: str) -> dict[str, np.ndarray]:
  return st_numpy.load_file(os.path.join(folder, storage.TENSORS_FILE))


def _same_tensors(a: str, b: str) -> bool:
  ta, tb = _tensors(a), _tensors(b)
  return ta.keys() == tb.keys() and all(
      ta[k].dtype == tb[k].dtype and np.array_equal(ta[k], tb[k])
      for k in ta)


def _export_of(stdout: str) -> str:
  line = [l for l in stdout.splitlines()
          if l.startswith('quantized checkpoint: ')][0]
  return line.split(': ', 1)[1].split(';')[0]


def _main_job_flags(stdout: str) -> list[str]:
  line = [l for l in stdout.splitlines() if 'the main job loads it' in l][0]
  return [f for f in line.split() if f.startswith('--config.')]


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  """A tiny ResNet trained 12 steps uninterrupted, and stopped + resumed."""
  root = tmp_path_factory.mktemp('qat')
  kwargs = {'stage_sizes': (1, 1), 'widths': (8, 16)}
  module = models.get_model('resnet20_cifar', num_classes=10, **kwargs)
  variables = module.init(jax.random.key(0),
                          np.zeros((1, 32, 32, 3), np.float32))
  fdir = str(root / 'fp32')
  checkpoints.save(fdir, model='resnet20_cifar', num_classes=10,
                   variables=variables,
                   model_kwargs={k: list(v) for k, v in kwargs.items()})
  flags = [SMOKE, f'--config.checkpoints.resnet20_cifar={fdir}',
           '--config.quant.qat.steps=12', '--config.quant.qat.batch_size=16',
           '--config.checkpoint_every=4', '--config.evaluate=false']
  cache = str(root / 'xla')
  a = _train(*flags, f'--workdir={root / "a"}', cache=cache)
  stopped = _train(*flags, f'--workdir={root / "b"}',
                   '--config.stop_after_steps=6', cache=cache)
  ckpts = root / 'b' / 'checkpoints'
  saved = sorted(int(s) for s in os.listdir(ckpts) if s.isdigit())
  exported_early = (root / 'b' / 'export').exists()
  # As if killed after step 6, before its checkpoint was written: the
  # resumed run restarts from step 4 and replays steps 5 and 6.
  shutil.rmtree(ckpts / '6')
  resumed = _train(*flags, f'--workdir={root / "b"}', cache=cache)
  return types.SimpleNamespace(
      root=root, flags=flags, cache=cache, a=a, stopped=stopped,
      resumed=resumed, saved=saved, exported_early=exported_early,
      float_dir=fdir)


def test_kill_and_resume_gives_the_same_weights(tiny):
  for p in (tiny.a, tiny.stopped, tiny.resumed):
    assert p.returncode == 0, p.stderr[-3000:]
  assert 'stopped after step 6 of 12' in tiny.stopped.stdout
  assert tiny.saved == [4, 6] and not tiny.exported_early
  assert '[QAT step 5/12' in tiny.resumed.stderr  # Resumed from step 4.
  a, b = _export_of(tiny.a.stdout), _export_of(tiny.resumed.stdout)
  assert a != b and a.endswith('resnet20_cifar/w4a4_lsq')
  assert _same_tensors(a, b)  # Bit for bit.
  doc_a, doc_b = storage.read_json(a), storage.read_json(b)
  assert doc_a['spec'] == doc_b['spec']
  assert doc_a['meta']['qat_loss_end'] == doc_b['meta']['qat_loss_end']
  # Not a run that learned nothing: the weights moved from the float ones.
  _, variables, _ = checkpoints.load(tiny.float_dir)
  assert not np.allclose(
      _tensors(a)['params/fc/bias'], variables['params']['fc']['bias'])


def test_the_main_job_loads_the_export_by_name(tiny):
  export = _export_of(tiny.a.stdout)
  flags = _main_job_flags(tiny.a.stdout)
  overrides = [tuple(f[len('--config.'):].split('=', 1)) for f in flags]
  settings = settings_lib.load('configs/resnet18_w4.py:sample', overrides)
  _, fvars, fspec = checkpoints.load(settings.checkpoints['resnet20_cifar'])

  def no_training_data():
    raise AssertionError('the main job re-quantized instead of loading')

  request = quant.QuantRequest(
      model_name='resnet20_cifar', model_kwargs=fspec['model_kwargs'],
      num_classes=10, float_variables=fvars, precision='w4a4',
      qconfig=settings.config.quant, train_arrays=no_training_data,
      cache_dir=str(tiny.root / 'main_cache'), mesh=None,
      seed=settings.seed)
  qmodel = quant.obtain(request, quant.parse_spec('w4a4',
                                                  settings.config.quant))
  _, _, stored = storage.load(export)
  assert jax.tree.all(jax.tree.map(np.array_equal, qmodel.variables, stored))
  # Without the flags (the study's own config.quant) it is not picked.
  plain = settings_lib.load('configs/resnet18_w4.py:sample', [
      ('quant.checkpoint_dir', os.path.dirname(os.path.dirname(export)))])
  spec = quant.parse_spec('w4a4', plain.config.quant)
  assert spec.fingerprint(0) != storage.read_json(export)['spec']


def test_a_rerun_after_the_end_does_not_train_again(tiny):
  again = _cli_batch([tiny.flags + [f'--workdir={tiny.root / "a"}']])[0]
  assert again['code'] == 0, again
  assert 'already trained and exported' in again['stdout']
  assert '[QAT step' not in again['stderr']


def test_bad_input_exits_2_with_one_sentence_and_writes_nothing(tiny,
                                                                tmp_path):
  afile = tmp_path / 'afile'
  afile.write_text('x')
  fresh = tmp_path / 'fresh'
  cases = [
      ([SMOKE.replace('smoke', 'bogus')], "'configs/qat.py:bogus'"),
      (['--config.nosuch=1'], "--config.nosuch='1'"),
      (['--config.quant.method=ptq'], "config.quant.method='ptq'"),
      (['--config.precision=w4a16'], "config.precision='w4a16'"),
      (['--config.model=resnet1000'], "config.model='resnet1000'"),
      (['--config.data.augment=random_resized_crop'], 'config.data.augment'),
      (['--config.data.source=folder:/nonexistent/val'],
       'config.data.train_source'),
      (['--config.checkpoint_every=0'], 'config.checkpoint_every=0'),
      (['--config.checkpoints.resnet20_cifar=/nonexistent/fp32'],
       'checkpoint folder not found'),
      (['--config.quant.qat.batch_size=33'], 'multiple of the device count'),
  ]
  argv = [[SMOKE, f'--workdir={fresh}'] + c if not c[0].startswith(
      '--config=') else c + [f'--workdir={fresh}'] for c, _ in cases]
  expected = [m for _, m in cases]
  argv += [[SMOKE, f'--workdir={tmp_path}/no/such/parent/run'],
           [SMOKE, f'--workdir={afile}'],
           [SMOKE],
           # Resuming a workdir with another config (here the seed).
           tiny.flags + [f'--workdir={tiny.root / "b"}', '--config.seed=1']]
  expected += ['parent exists', 'regular file', '--workdir is required',
               'another QAT run']
  results = _cli_batch(argv + [['--help']])
  *results, help_result = results
  for args, match, r in zip(argv, expected, results):
    lines = r['stderr'].splitlines()
    assert r['code'] == 2, (args, r)
    assert len(lines) == 1 and lines[0].startswith('error: '), (args, lines)
    assert match in lines[0], (match, lines[0])
  assert not fresh.exists() and afile.read_text() == 'x'
  assert help_result['code'] == 0
  for want in (':smoke', ':sample', ':imagenet', 'stop_after_steps',
               'checkpoint_every', 'quant'):
    assert want in help_result['stdout'], want


@pytest.mark.slow
def test_smoke_kill_at_step_30_and_resume_gives_the_same_weights(tmp_path):
  """The issue's check: `:smoke` as shipped (60 steps, a checkpoint every
  20), uninterrupted vs stopped after step 30 and resumed (from step 30;
  then again from step 20 as if killed before step 30's save)."""
  cache = str(tmp_path / 'xla')
  full = _train(SMOKE, f'--workdir={tmp_path / "full"}', cache=cache)
  assert full.returncode == 0, full.stderr[-3000:]
  for name, drop in (('from30', False), ('from20', True)):
    wd = tmp_path / name
    p = _train(SMOKE, f'--workdir={wd}', '--config.stop_after_steps=30',
               cache=cache)
    assert p.returncode == 0 and 'stopped after step 30' in p.stdout
    if drop:
      shutil.rmtree(wd / 'checkpoints' / '30')
    p = _train(SMOKE, f'--workdir={wd}', cache=cache)
    assert p.returncode == 0, p.stderr[-3000:]
    assert _same_tensors(_export_of(full.stdout), _export_of(p.stdout)), name
  assert storage.read_json(_export_of(full.stdout))['meta'][
      'test_accuracy'] > 0.9


@pytest.mark.slow
def test_a_folder_source_trains_alike_with_grain_threads_or_processes(
    tiny, tmp_path):
  fake_imagenet.write_folder(str(tmp_path / 'train'), 3, 6, seed=1)
  fake_imagenet.write_folder(str(tmp_path / 'val'), 3, 2, seed=0)
  flags = tiny.flags + [
      '--config.quant.qat.steps=6', '--config.quant.qat.batch_size=8',
      '--config.checkpoint_every=3', '--config.evaluate=true',
      f'--config.data.source=folder:{tmp_path / "val"}',
      f'--config.data.train_source=folder:{tmp_path / "train"}',
      '--config.data.augment=random_resized_crop']
  exports = []
  for workers in (0, 1):
    p = _train(*flags, f'--config.data.workers={workers}',
               f'--workdir={tmp_path / str(workers)}', cache=tiny.cache)
    assert p.returncode == 0, p.stderr[-3000:]
    exports.append(_export_of(p.stdout))
  assert _same_tensors(*exports)
  meta = storage.read_json(exports[0])['meta']
  assert meta['test_examples'] == 6 and meta['augment'] == 'random_resized_crop'


# The input stream.


def test_a_step_batch_depends_on_seed_and_step_only():
  ds = SampleDataset('train')
  s = train_stream.TrainStream(ds, global_batch=64, seed=0)
  x, y = s.batch(30)
  x2, y2 = train_stream.TrainStream(ds, global_batch=64, seed=0).batch(30)
  assert np.array_equal(x, x2) and np.array_equal(y, y2)
  x3, _ = train_stream.TrainStream(ds, global_batch=64, seed=1).batch(30)
  assert not np.array_equal(x, x3)
  batches = list(s.batches(29, 31))
  assert np.array_equal(batches[1][0], x) and len(batches) == 2


def test_each_epoch_visits_every_example_once():
  order = train_stream.TrainOrder(1438, seed=3)
  epoch0 = order.ids(np.arange(1438))
  epoch1 = order.ids(np.arange(1438, 2 * 1438))
  assert sorted(epoch0) == list(range(1438)) == sorted(epoch1)
  assert not np.array_equal(epoch0, epoch1)
  # Positions across an epoch boundary read both permutations.
  assert np.array_equal(order.ids(np.arange(1430, 1446)),
                        np.concatenate([epoch0[1430:], epoch1[:8]]))


@pytest.mark.parametrize('processes', [2, 4])
def test_process_shares_are_disjoint_and_make_the_global_batch(processes):
  ds = SampleDataset('train')
  whole = train_stream.TrainStream(ds, global_batch=64, seed=0).batch(7)
  shares = [train_stream.TrainStream(
      ds, global_batch=64, seed=0, process_index=k,
      process_count=processes).batch(7) for k in range(processes)]
  for part in (0, 1):
    assert np.array_equal(np.concatenate([s[part] for s in shares]),
                          whole[part])


def test_crop_box_is_inside_the_image_with_torchvision_scales():
  rng = np.random.default_rng(0)
  for w, h in ((500, 375), (375, 500), (64, 1000), (32, 32)):
    for _ in range(200):
      top, left, ch, cw = train_stream.crop_box(w, h, rng)
      assert 0 <= top and top + ch <= h and 0 <= left and left + cw <= w
      assert ch > 0 and cw > 0
      if (w, h) != (64, 1000):  # Extreme shapes fall back to a centre crop.
        assert 0.07 <= ch * cw / (w * h) <= 1.0
        assert 3 / 4 - 0.05 <= cw / ch <= 4 / 3 + 0.05 or ch * cw == w * h


def test_folder_stream_crops_per_position_and_decodes_in_grain(tmp_path):
  fake_imagenet.write_folder(str(tmp_path), 2, 3, seed=0)
  ds = FolderDataset(str(tmp_path), image_size=32)
  s = train_stream.TrainStream(ds, global_batch=4, seed=0,
                               augment='random_resized_crop')
  direct = [s.batch(step) for step in range(3)]
  streamed = list(s.batches(0, 3))  # Grain reader threads.
  for (x, y), (gx, gy) in zip(direct, streamed):
    assert x.shape == (4, 32, 32, 3) and x.dtype == np.uint8
    assert np.array_equal(x, gx) and np.array_equal(y, gy)
  # Step 1's last rows and step 2's first are epoch 1 (6 images): the same
  # example at another position gets another crop.
  positions = np.arange(12)
  ids = s.share.order.ids(positions)
  first, again = [int(np.flatnonzero(ids == ids[0])[k]) for k in (0, 1)]
  crops = np.concatenate([b[0] for b in direct])
  assert not np.array_equal(crops[first], crops[again])
  plain = train_stream.TrainStream(ds, global_batch=4, seed=0).batch(0)[0]
  assert np.array_equal(plain[0], ds.decode_one(int(ids[0])))
