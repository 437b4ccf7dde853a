"""Bad input through the real command line: one sentence, exit 2, no harm.

The cases run in one subprocess (tests/cli_batch.py): it imports the job
once and runs `robustmq_jax.main.entry()` in a forked child per case, with
that case's argv, stdout and stderr.
"""

import json
import os
import subprocess
import sys

import pytest

from robustmq_jax import settings as settings_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = 'configs/vit_w4.py:sample'

# (extra arguments, text the one error line must contain). Every case runs
# with --workdir=<a workdir already holding rows> unless it sets its own.
BAD = [
    (['--config=configs/nope.py'], "--config='configs/nope.py'"),
    (['--config=configs/vit_w4.py:bogus'], "'configs/vit_w4.py:bogus'"),
    (['--config=configs/defenses.py:bogus'], 'sample_resnet'),
    (['--config=README.md'], 'failed to load'),
    (['--config=configs'], "--config='configs'"),
    (['--config.nosuchfield=1'], "--config.nosuchfield='1'"),
    (['--config.data.nope=3'], 'fields of config.data'),
    (['--config.seed=abc'], "--config.seed='abc'"),
    (['--config.seed'], '--config.seed=VALUE'),
    (['--config.batch_size=1.5'], "--config.batch_size='1.5'"),
    (['--config.batch_size=0'], 'config.batch_size=0'),
    (['--config.batch_size=12'], 'multiple of 8'),
    (['--config.seed=-1'], 'config.seed=-1'),
    (['--config.data.num_examples=-5'], 'config.data.num_examples=-5'),
    (['--config.log_every_s=-1'], 'config.log_every_s=-1'),
    (['--config.grid_shard=3/2'], "config.grid_shard='3/2'"),
    (['--config.models=resnet1000'], "config.models='resnet1000'"),
    (['--config.models=,'], 'at least one name'),
    (['--config.precisions=w9a9'], 'w9a9'),
    (['--config.precisions=w4a4:nope'], 'nope'),
    (['--config.suites=nope'], "config.suites='nope'"),
    (['--config.data.source=mnist'], "config.data.source='mnist'"),
    (['--config.data.train_source=mnist'], 'config.data.train_source'),
    (['--config.corruption.severities=1,x'], 'list of integers'),
    (['--config.adversarial.transfer=maybe'], 'true or false'),
    (['--config.adversarial.linf_eps_255=(1,'], 'tuple literal'),
    (['--config.data=3'], 'sub-fields only'),
    (['--config.checkpoints.vit_tiny_patch4_32='],
     'config.checkpoints.vit_tiny_patch4_32'),
    (['--config.models=resnet50'], '--config.checkpoints.resnet50=DIR'),
    (['--config=configs/resnet18_w4.py', '--config.models=resnet50',
      '--config.checkpoints.resnet50=/nonexistent/r50'],
     "config.checkpoints.resnet50='/nonexistent/r50': checkpoint folder not "
     'found'),
    (['--config=configs/qat.py:smoke'],
     'is a config of `python -m robustmq_jax.train`'),
    (['--compilation_cache=/dev/null/xla'], '--compilation_cache='),
    (['--nosuchflag'], 'nosuchflag'),
    (['positional'], 'unexpected arguments'),
]


def _rows_workdir(tmp_path):
  workdir = tmp_path / 'done'
  workdir.mkdir()
  rows = [{'dataset': 'sample', 'model': 'vit_tiny_patch4_32',
           'precision': p, 'method': 'float', 'suite': 'clean',
           'noise': 'none', 'params': {}, 'seed': 0, 'n': 40,
           'accuracy': 0.5} for p in ('fp32', 'w4a4')]
  (workdir / 'results.jsonl').write_text(
      ''.join(json.dumps(r) + '\n' for r in rows))
  (workdir / 'report.md').write_text('# report\n')
  return workdir


def _snapshot(folder):
  out = {}
  for dirpath, _, files in os.walk(folder):
    for f in files:
      path = os.path.join(dirpath, f)
      with open(path, 'rb') as fh:
        out[os.path.relpath(path, folder)] = fh.read()
  return out


def _run_batch(tmp_path, cases):
  cases_path, out_path = tmp_path / 'cases.json', tmp_path / 'out.json'
  cases_path.write_text(json.dumps(cases))
  subprocess.run([sys.executable, os.path.join(ROOT, 'tests', 'cli_batch.py'),
                  str(cases_path), str(out_path)], check=True, cwd=ROOT,
                 timeout=600)
  return json.loads(out_path.read_text())


def test_bad_inputs_exit_2_with_one_sentence_and_leave_the_workdir(tmp_path):
  workdir = _rows_workdir(tmp_path)
  afile = tmp_path / 'afile'
  afile.write_text('not a folder\n')
  before = _snapshot(workdir)
  cases, expected = [], []
  for extra, match in BAD:
    has_config = any(a.startswith('--config=') for a in extra)
    cases.append(([] if has_config else ['--config=' + SAMPLE]) +
                 ['--workdir=' + str(workdir)] + extra)
    expected.append(match)
  for args, match in [
      (['--workdir=' + str(afile)], 'regular file'),
      (['--workdir=' + str(afile / 'sub')], 'regular file'),
      ([], '--workdir is required'),
  ]:
    cases.append(['--config=' + SAMPLE] + args)
    expected.append(match)
  cases.append(['--workdir=' + str(workdir)])
  expected.append('--config is required')
  assert len(cases) >= 25
  results = _run_batch(tmp_path, cases + [['--help']])
  *results, help_result = results
  for argv, match, r in zip(cases, expected, results):
    lines = r['stderr'].splitlines()
    assert r['code'] == 2, (argv, r)
    assert 'Traceback' not in r['stderr'], (argv, r['stderr'])
    assert len(lines) == 1 and lines[0].startswith('error: '), (argv, lines)
    assert match in lines[0], (argv, match, lines[0])
    assert lines[0].rstrip().endswith('.'), lines[0]
  assert _snapshot(workdir) == before
  assert afile.read_text() == 'not a folder\n'
  # --help: configs with their args, the main fields, the override syntax.
  text = help_result['stdout']
  assert help_result['code'] == 0, help_result
  for want in ('configs/vit_w4.py', 'configs/resnet18_w4.py',
               'configs/defenses.py', ':sample_full', ':sample_resnet',
               'data.num_examples', 'checkpoints.<model>', '--config.seed=3',
               '--config.suites=clean,adversarial', '--workdir'):
    assert want in text, want
  assert 'absl.' not in text and 'logtostderr' not in text
  assert max(len(line) for line in text.splitlines()) <= 80


def test_overrides_are_typed_and_checkpoints_take_any_model():
  s = settings_lib.load('configs/resnet18_w4.py', [
      ('models', 'resnet50'), ('checkpoints.resnet50', '/ckpt/r50'),
      ('suites', 'clean,adversarial'), ('precisions', "('fp32','w4a4')"),
      ('seed', '7'), ('corruption.severities', '1, 3'),
      ('adversarial.transfer', 'false'), ('adversarial.linf_eps_255', '1,2')])
  assert s.models == ('resnet50',)
  assert s.checkpoints['resnet50'] == '/ckpt/r50'
  assert s.suites == ('clean', 'adversarial')
  assert s.precisions == ('fp32', 'w4a4')
  assert s.seed == 7
  assert s.config.corruption.severities == (1, 3)
  assert s.config.adversarial.transfer is False
  assert s.config.adversarial.linf_eps_255 == (1.0, 2.0)
  with pytest.raises(AttributeError):
    s.seed = 3  # Frozen.
  with pytest.raises((AttributeError, TypeError)):
    s.config.seed = 3


def test_settings_copy_the_config():
  config = settings_lib.config_loading.load(SAMPLE)
  s = settings_lib.from_config(config)
  config.seed = 5
  assert s.seed == 0 and s.config.seed == 0
