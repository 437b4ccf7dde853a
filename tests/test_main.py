"""The main job end to end on the embedded sample, reruns and bad input."""

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from robustmq_jax import runner
from robustmq_jax import settings as settings_lib
from robustmq_jax.checkpoints import io as checkpoints_io
from robustmq_jax.errors import UserError
from robustmq_jax.results import cell_key
from robustmq_jax.results import latest
from robustmq_jax.results import mixed_weights
from robustmq_jax.results import read_rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sample_config(name='vit_w4.py', **overrides):
  spec = importlib.util.spec_from_file_location(
      'cfg', os.path.join(ROOT, 'configs', name))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config('sample')
  config.precisions = ('fp32',)
  config.suites = ('clean',)
  config.data.num_examples = 40
  config.log_every_s = 1e9
  for k, v in overrides.items():
    node = config
    *path, last = k.split('.')
    for p in path:
      node = node[p]
    node[last] = v
  return config


def _keys(rows):
  return sorted(cell_key(r) for r in rows)


def test_end_to_end_writes_rows_and_report_and_rerun_adds_nothing(tmp_path):
  workdir = str(tmp_path)
  rows = runner.run(sample_config(), workdir)
  assert len(rows) == 1
  row = rows[0]
  for field in ('model', 'precision', 'suite', 'noise', 'params', 'n',
                'accuracy', 'dataset', 'seed', 'versions', 'time_s'):
    assert field in row, field
  assert row['n'] == 40 and 0.0 <= row['accuracy'] <= 1.0
  assert row['accuracy'] > 0.5  # The shipped sample model is trained.
  for f in ('results.jsonl', 'results.csv', 'report.md', 'report.html'):
    assert os.path.exists(os.path.join(workdir, f)), f
  runner.run(sample_config(), workdir)
  assert len(read_rows(os.path.join(workdir, 'results.jsonl'))) == 1


def test_interrupted_run_resumes_to_the_same_rows(tmp_path):
  # A run stopped after its first cell, then rerun, stores exactly the rows
  # of one uninterrupted run.
  full = sample_config(**{'data.num_examples': 24})
  full.suites = ('clean',)
  full.models = ('vit_tiny_patch4_32',)
  clean_dir, resumed_dir = str(tmp_path / 'a'), str(tmp_path / 'b')
  reference = runner.run(full, clean_dir)
  partial = sample_config(**{'data.num_examples': 24})
  runner.run(partial, resumed_dir)
  with open(os.path.join(resumed_dir, 'results.jsonl'), 'a') as f:
    f.write('{"torn": ')  # Killed in the middle of writing a row.
  resumed = runner.run(full, resumed_dir)
  assert _keys(resumed) == _keys(reference)
  assert len(read_rows(os.path.join(resumed_dir, 'results.jsonl'))) == len(
      reference)


@pytest.mark.parametrize('field,value,match', [
    ('models', ('resnet1000',), "config.models='resnet1000'"),
    ('precisions', ('w9a9',), 'w9a9'),
    ('suites', ('nope',), "config.suites='nope'"),
    ('data.source', 'mnist', "config.data.source='mnist'"),
    ('batch_size', 0, 'config.batch_size=0'),
    ('batch_size', 12, 'multiple of 8'),
    ('seed', -1, 'config.seed=-1'),
    ('data.num_examples', -5, 'config.data.num_examples=-5'),
])
def test_bad_config_values_name_the_field(tmp_path, field, value, match):
  with pytest.raises(UserError, match=match.replace('(', r'\(')):
    runner.run(sample_config(**{field: value}), str(tmp_path))


def test_missing_and_corrupt_checkpoints(tmp_path):
  config = sample_config()
  config.checkpoints.vit_tiny_patch4_32 = str(tmp_path / 'missing')
  with pytest.raises(UserError, match='checkpoint folder not found'):
    runner.run(config, str(tmp_path / 'w1'))
  bad = tmp_path / 'bad'
  bad.mkdir()
  (bad / 'model.json').write_text(json.dumps(
      {'model': 'vit_tiny_patch4_32', 'num_classes': 10}))
  (bad / 'variables.msgpack').write_bytes(b'\x00garbage')
  config.checkpoints.vit_tiny_patch4_32 = str(bad)
  with pytest.raises(UserError, match='corrupt'):
    runner.run(config, str(tmp_path / 'w2'))


@pytest.mark.parametrize('args, expected', [
    (['--config=configs/vit_w4.py:sample', '--config.models=nope'],
     "config.models='nope'"),
    (['--config=configs/nope.py'], 'configs/nope.py'),
    (['--config=configs/vit_w4.py:bogus'], 'vit_w4.py:bogus'),
    (['--config=configs/vit_w4.py:sample', '--config.nosuchfield=1'],
     'nosuchfield'),
])
def test_command_line_bad_input_exits_2_with_one_sentence(tmp_path, args,
                                                         expected):
  # A real `python -m` process (the CLI table test forks an imported
  # module): nothing else may reach the terminal, import-time warnings
  # included.
  out = subprocess.run(
      [sys.executable, '-m', 'robustmq_jax.main', '--workdir=' + str(tmp_path)]
      + args, capture_output=True, text=True, cwd=ROOT, timeout=120,
      env=dict(os.environ, XLA_FLAGS=''))
  assert out.returncode == 2
  assert out.stdout == ''
  err = out.stderr.strip().splitlines()
  assert len(err) == 1, out.stderr
  assert err[0].startswith('error: ') and err[0].endswith('.'), err
  assert expected in err[0]
  assert os.listdir(tmp_path) == []


def test_garbage_line_in_the_middle_is_moved_aside_and_its_cell_recomputed(
    tmp_path):
  config = sample_config(**{'data.num_examples': 24})
  config.models = ('vit_tiny_patch4_32', 'resnet20_cifar')
  config.checkpoints.resnet20_cifar = 'checkpoints/sample/resnet20_cifar/fp32'
  workdir = str(tmp_path)
  first = runner.run(config, workdir)
  path = os.path.join(workdir, 'results.jsonl')
  with open(path) as f:
    lines = f.readlines()
  assert len(lines) == 2
  garbled = lines[0][:40] + '\n'
  with open(path, 'w') as f:
    f.writelines([garbled, lines[1]])
  again = runner.run(config, workdir)
  assert _keys(again) == _keys(first)
  with open(os.path.join(workdir, 'results.corrupt.jsonl')) as f:
    assert f.read() == garbled
  assert _keys(read_rows(path)) == _keys(first)


def test_repointed_checkpoint_adds_rows_and_latest_shows_them(tmp_path,
                                                              capsys):
  workdir = str(tmp_path / 'w')
  old = runner.run(sample_config(), workdir)
  out = capsys.readouterr().out.splitlines()
  assert len(out) == 4 and out[-1].startswith('report: ')
  assert out[-1].split(': ', 1)[1].split(', ')[0] == os.path.join(
      workdir, 'report.md')
  assert old[0]['weights']['float'] and old[0]['code']['version']
  assert old[0]['data']['source'] == 'sample'
  # The same weights copied elsewhere: same hash, nothing recomputed.
  copy = tmp_path / 'copy'
  shutil.copytree(os.path.join(ROOT, 'checkpoints', 'sample',
                               'vit_tiny_patch4_32', 'fp32'), copy)
  same = runner.run(sample_config(
      **{'checkpoints.vit_tiny_patch4_32': str(copy)}), workdir)
  assert len(same) == 1
  # Other weights (a 'retrained' model: the classifier's logits negated, so
  # its accuracy collapses): a new row beside the old one.
  module, variables, spec = checkpoints_io.load(str(copy))
  del module
  variables = jax.tree.map(np.asarray, variables)
  variables['params']['head']['kernel'] = -variables['params']['head'][
      'kernel']
  variables['params']['head']['bias'] = -variables['params']['head']['bias']
  checkpoints_io.save(str(copy), model=spec['model'],
                      num_classes=spec['num_classes'], variables=variables,
                      model_kwargs=spec.get('model_kwargs'))
  rows = runner.run(sample_config(
      **{'checkpoints.vit_tiny_patch4_32': str(copy)}), workdir)
  assert len(rows) == 2
  assert rows[0]['weights']['float'] != rows[1]['weights']['float']
  assert rows[0]['accuracy'] > 0.5 > rows[1]['accuracy']
  assert len(read_rows(os.path.join(workdir, 'results.jsonl'))) == 2
  newest = latest(rows)
  assert len(newest) == 1 and newest[0] is rows[1]
  hashes = [rows[0]['weights']['float'], rows[1]['weights']['float']]
  assert mixed_weights(rows) == {'vit_tiny_patch4_32': hashes}
  # The report shows the newest row only, and says the workdir mixes
  # weights.
  with open(os.path.join(workdir, 'results.csv')) as f:
    table = list(csv.DictReader(f))
  assert len(table) == 1
  assert float(table[0]['accuracy']) == pytest.approx(rows[1]['accuracy'])
  assert hashes[1] in table[0]['weights'] and hashes[0] not in table[0][
      'weights']
  with open(os.path.join(workdir, 'findings.json')) as f:
    assert json.load(f)['mixed_weights'] == {'vit_tiny_patch4_32': hashes}
  with open(os.path.join(workdir, 'report.md')) as f:
    report = f.read()
  assert 'Mixed weights' in report
  assert f'{100 * rows[1]["accuracy"]:.1f}' in report


def _comparable(rows):
  drop = ('time_s', 'timestamp', 'versions', 'code')
  return sorted((cell_key(r), json.dumps({k: v for k, v in r.items()
                                          if k not in drop}, sort_keys=True))
                for r in rows)


@pytest.mark.slow
def test_two_runs_in_one_process_match_separate_processes(tmp_path):
  # Run A leaves nothing behind that changes run B (suites, caches,
  # compiled programs are run-scoped).
  overrides = {
      'suites': 'clean,adversarial,corruption', 'data.num_examples': '24',
      'adversarial.attacks': 'fgsm', 'adversarial.num_examples': '16',
      'adversarial.linf_eps_255': '2', 'corruption.names': 'gaussian_noise',
      'corruption.severities': '1,3', 'corruption.num_examples': '16'}
  config_a = settings_lib.load('configs/vit_w4.py:sample',
                               list(dict(overrides, precisions='fp32').items()))
  config_b = list(dict(overrides, precisions='fp32', seed='1',
                       **{'adversarial.linf_eps_255': '1,4'}).items())
  runner.run(config_a, str(tmp_path / 'a'))
  in_process = runner.run(settings_lib.load('configs/vit_w4.py:sample',
                                            config_b), str(tmp_path / 'b'))
  out = subprocess.run(
      [sys.executable, '-m', 'robustmq_jax.main',
       '--config=configs/vit_w4.py:sample', '--workdir=' + str(tmp_path / 'c')]
      + [f'--config.{k}={v}' for k, v in config_b],
      capture_output=True, text=True, cwd=ROOT, timeout=900)
  assert out.returncode == 0, out.stderr[-2000:]
  separate = read_rows(str(tmp_path / 'c' / 'results.jsonl'))
  assert len(in_process) == len(separate) > 4
  assert _comparable(in_process) == _comparable(separate)


def test_precisions_that_differ_in_bits_share_their_programs(tmp_path):
  """A second bit width adds no traced program and gives its own rows.

  The quantized ViT's w4a4 and w2a2 (shipped checkpoints, same plan but for
  bits) share apply functions and hence compiled steps; the w2a2 rows equal
  those of a run of w2a2 alone.
  """
  overrides = {'suites': 'clean,adversarial,corruption',
               'data.num_examples': '16', 'adversarial.attacks': 'fgsm',
               'adversarial.num_examples': '8',
               'adversarial.linf_eps_255': '2',
               'corruption.names': 'gaussian_noise',
               'corruption.severities': '3', 'corruption.num_examples': '8'}
  traced = []

  def listen(event, duration, **kw):
    del duration
    if event.endswith('jaxpr_trace_duration') and kw.get('fun_name') == 'step':
      traced.append(1)

  def run(precisions, name):
    traced.clear()
    config = settings_lib.load('configs/vit_w4.py:sample', list(
        dict(overrides, precisions=precisions).items()))
    rows = runner.run(config, str(tmp_path / name))
    return len(traced), rows

  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    one, _ = run('w4a4', 'one')
    two, both = run('w4a4,w2a2', 'two')
    _, alone = run('w2a2', 'alone')
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)
  assert one >= 3 and two == one  # clean, serve (int8), attack, corruption
  w2 = [r for r in both if r['precision'] == 'w2a2']
  assert len(w2) == len(alone) == 4  # clean, fgsm, corruption, its clean
  assert any('accuracy_transfer' in r for r in w2)
  assert _comparable(w2) == _comparable(alone)
