"""Every config in configs/ builds and validates, for every arg it lists."""

import glob
import os

import importlib.util
import shlex

import pytest

from robustmq_jax import config_loading
from robustmq_jax import runner
from robustmq_jax import settings as settings_lib
from robustmq_jax import study
from robustmq_jax.errors import UserError
from robustmq_jax.training import qat_settings

# Main-job (study) configs; configs/qat.py configures the QAT job
# (robustmq_jax.train) and is checked by its own validator below.
_QAT = 'qat.py'
_CONFIGS = sorted(p for p in glob.glob(os.path.join(
    os.path.dirname(os.path.dirname(__file__)), 'configs', '*.py'))
                  if os.path.basename(p) != _QAT)


def _load(path, arg):
  spec = importlib.util.spec_from_file_location('cfg', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.mark.parametrize('path', _CONFIGS, ids=os.path.basename)
@pytest.mark.parametrize('arg', [None, 'sample'])
def test_config_builds_and_validates(path, arg):
  config = _load(path, arg)
  plan = runner.validate(config)
  assert plan.models and plan.precisions and plan.suites
  if arg == 'sample':
    assert config.data.source == 'sample'
    for m in plan.models:
      assert os.path.isdir(runner.resolve_path(config.checkpoints[m])), m
  else:
    assert config.data.source.startswith('tfds:imagenet2012')


@pytest.mark.parametrize('path', _CONFIGS, ids=os.path.basename)
def test_bad_config_arg_is_refused(path):
  with pytest.raises(UserError, match='allowed'):
    _load(path, 'nonsense')


@pytest.mark.parametrize('path', _CONFIGS, ids=os.path.basename)
def test_every_listed_arg_builds_and_validates(path):
  rel = os.path.relpath(path, config_loading.REPO_ROOT)
  args = config_loading.load_module(rel).ARGS
  assert args, rel
  for arg in args:
    settings = settings_lib.load(f'{rel}:{arg}')
    assert settings.models and settings.precisions and settings.suites
    assert set(settings.models) <= set(settings.checkpoints)


def test_qat_config_args_build_and_validate():
  module = config_loading.load_module(f'configs/{_QAT}')
  assert set(module.ARGS) == {'imagenet', 'smoke', 'sample'}
  for arg in (None,) + tuple(module.ARGS):
    s = qat_settings.from_config(config_loading.load(
        f'configs/{_QAT}' + (f':{arg}' if arg else '')))
    assert s.spec.is_qat and s.steps > 0
    if arg in ('smoke', 'sample'):
      assert s.source == 'sample'
      assert os.path.isdir(runner.resolve_path(s.float_checkpoint))
    else:
      assert s.source.startswith('tfds:imagenet2012') and s.spec.bn_fold
  with pytest.raises(UserError, match='allowed'):
    _load(os.path.join(config_loading.CONFIG_DIR, _QAT), 'nonsense')


def test_study_defaults_come_from_the_modules_not_importlib():
  import inspect  # pylint: disable=g-import-not-at-top
  source = inspect.getsource(study)
  assert 'importlib' not in source and 'ModuleNotFoundError' not in source


def test_configs_exist():
  names = {os.path.basename(p) for p in _CONFIGS}
  assert {'vit_w4.py', 'resnet18_w4.py'} <= names


@pytest.mark.parametrize('name', ['vit_w4.py', 'resnet18_w4.py'])
def test_sample_full_widens_the_quickstart_grid(name):
  path = [p for p in _CONFIGS if os.path.basename(p) == name][0]
  quick, full = _load(path, 'sample'), _load(path, 'sample_full')
  runner.validate(full)
  assert 'autoattack' not in quick.adversarial.attacks
  assert {'autoattack', 'square', 'pgd_l2', 'pgd_l1'} <= set(
      full.adversarial.attacks)
  assert len(quick.systematic.decoders) == 3
  assert len(full.systematic.decoders) == 13
  assert full.precisions == quick.precisions
  assert full.data.source == quick.data.source == 'sample'


def _readme_commands():
  path = os.path.join(config_loading.REPO_ROOT, 'README.md')
  with open(path) as f:
    text = f.read().replace('\\\n', ' ')
  commands = []
  for line in text.splitlines():
    if ('python -m robustmq_jax.main' in line and '--config=' in line
        and '<study>' not in line):  # Not the usage template.
      commands.append(shlex.split(line.split('python -m robustmq_jax.main',
                                             1)[1].split('#')[0]))
  return commands


def test_readme_commands_load_and_validate():
  commands = _readme_commands()
  assert len(commands) >= 5  # Fails, not skips, if the examples go away.
  for argv in commands:
    rest, overrides = config_loading.split_argv(argv)
    spec = [a.split('=', 1)[1] for a in rest if a.startswith('--config=')][0]
    overrides = [(k, os.path.expandvars(v)) for k, v in overrides]
    settings = settings_lib.load(spec, overrides)
    assert settings.models, argv
