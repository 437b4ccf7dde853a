"""Every config in configs/ builds and validates, with and without 'sample'."""

import glob
import os

import importlib.util

import pytest

from robustmq_jax import runner

_CONFIGS = sorted(glob.glob(os.path.join(
    os.path.dirname(os.path.dirname(__file__)), 'configs', '*.py')))


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
  with pytest.raises(ValueError, match='allowed'):
    _load(path, 'nonsense')


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
