"""Every config in configs/ builds and validates, for every arg it lists."""

import glob
import os

import importlib.util
import shlex

import pytest

from robustmq_jax import config_loading
from robustmq_jax import precision
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


def _robustmq(arg=None):
  path = [p for p in _CONFIGS if os.path.basename(p) == 'robustmq.py'][0]
  return config_loading.load_module(
      os.path.relpath(path, config_loading.REPO_ROOT)), _load(path, arg)


def test_robustmq_is_the_paper_grid():
  module, config = _robustmq()
  settings = settings_lib.from_config(config)
  assert settings.models == ('resnet18', 'resnet50', 'regnetx_600mf',
                             'mobilenet_v2')
  quantized = [p for p in settings.precisions if p != 'fp32']
  assert settings.precisions[0] == 'fp32' and len(quantized) == 12
  assert {precision.split(p) for p in quantized} == {
      (b, m) for b in ('w2a2', 'w4a4', 'w6a6', 'w8a8')
      for m in ('dorefa', 'pact', 'lsq')}
  assert set(settings.suites) == {'clean', 'adversarial', 'corruption',
                                  'systematic'}
  assert tuple(config.adversarial.attacks) == (
      'fgsm', 'pgd_linf', 'pgd_l2', 'pgd_l1', 'autoattack')
  assert tuple(config.corruption.names) == ('benchmark',)
  assert tuple(config.corruption.severities) == (1, 2, 3, 4, 5)
  assert tuple(config.systematic.decoders) == ('pil', 'opencv', 'ffmpeg')
  assert len(config.systematic.resizes) == 11
  assert config.quant.bn_fold  # MQBench academic: BatchNorm folded.
  doc = module.__doc__
  assert 'python -m robustmq_jax.main --config=configs/robustmq.py' in doc
  assert 'device-hours' in doc


def test_robustmq_sample_twins_and_quick_variant():
  _, sample = _robustmq('sample')
  _, quick = _robustmq('sample_quick')
  # A 32x32 twin per paper architecture, in the paper's order.
  assert sample.models == ('resnet20_cifar', 'resnet29_bottleneck_cifar',
                           'regnetx_cifar', 'mobilenet_v2_cifar')
  assert sample.suites == _robustmq()[1].suites
  assert sample.precisions == _robustmq()[1].precisions
  assert sample.data.source == quick.data.source == 'sample'
  assert quick.models == ('resnet20_cifar',)
  assert set(quick.precisions) < set(sample.precisions)
  assert {precision.split(p)[1] for p in quick.precisions[1:]} == {
      'dorefa', 'pact', 'lsq'}


def _shipped_quantized(arg):
  """[(folder, spec fingerprint, float digest, found)] of robustmq:arg."""
  from robustmq_jax import checkpoints  # pylint: disable=g-import-not-at-top
  from robustmq_jax import quant  # pylint: disable=g-import-not-at-top
  from robustmq_jax.quant import storage  # pylint: disable=g-import-not-at-top
  _, config = _robustmq(arg)
  out = []
  for model in config.models:
    _, variables, _ = checkpoints.load(
        runner.resolve_path(config.checkpoints[model]))
    digest = storage.digest(quant.to_numpy(variables))
    for p in config.precisions[1:]:
      base, qconfig = precision.quant_config(p, config.quant)
      spec = quant.parse_spec(base, qconfig)
      folder = os.path.join(runner.resolve_path(spec.checkpoint_dir), model,
                            quant.checkpoint_name(spec))
      out.append((folder, spec.fingerprint(config.seed), digest,
                  os.path.isdir(folder)))
  return out


def test_robustmq_quick_needs_no_fine_tuning():
  """Every quantized model of :sample_quick is shipped and matches."""
  from robustmq_jax.quant import storage  # pylint: disable=g-import-not-at-top
  for folder, fingerprint, digest, found in _shipped_quantized(
      'sample_quick'):
    assert found, folder
    doc = storage.read_json(folder)
    assert doc['spec'] == fingerprint, folder
    assert doc['meta']['float_digest'] == digest, folder


def test_robustmq_sample_needs_no_fine_tuning():
  """All 48 quantized models of the :sample grid (4 twins x 3 methods x 4
  bit widths) are shipped and match it (else the run retrains them)."""
  from robustmq_jax.quant import storage  # pylint: disable=g-import-not-at-top
  shipped = _shipped_quantized('sample')
  assert len(shipped) == 48
  for folder, fingerprint, digest, found in shipped:
    assert found, folder
    doc = storage.read_json(folder)
    assert doc['spec'] == fingerprint, folder
    assert doc['meta']['float_digest'] == digest, folder


@pytest.mark.parametrize('text, method, bits', [
    ('w4a4:dorefa', 'dorefa', 4), ('w2a2:pact', 'pact', 2),
    ('w8a8:lsq', 'lsq', 8), ('w4a4:ptq', 'ptq', 4), ('w4a4', 'lsq', 4),
    ('fp32', 'float', None), ('w4a4:dq', 'dq', 4), ('fp32:adv', 'adv', None)])
def test_precision_names_its_method(text, method, bits):
  precision.validate(text)
  assert precision.method_of(text, {'method': 'lsq'}) == method
  assert precision.weight_bits(text) == bits
  assert precision.is_defense(text) == (method in ('dq', 'adv'))


def test_quant_method_suffix_replaces_config_quant_method():
  config = study.study_config('sample', imagenet_model='resnet18',
                              sample_model='resnet20_cifar',
                              imagenet_precisions=('fp32',))
  base, qconfig = precision.quant_config('w4a4:pact', config.quant)
  assert base == 'w4a4' and qconfig['method'] == 'pact'
  assert config.quant.method == 'lsq'  # The config itself is unchanged.
  assert precision.quant_config('w4a4', config.quant) == ('w4a4',
                                                          config.quant)
  with pytest.raises(ValueError):
    precision.quant_config('w4a4:dq', config.quant)


@pytest.mark.parametrize('text, needle', [
    ('w4a4:sgd', "method suffix of 'w4a4:sgd'"),
    ('fp32:pact', 'needs bit widths'), ('w4a4:adv', 'is a float model'),
    ('w9a9:lsq', 'weight bits 9')])
def test_bad_precision_suffix_is_one_sentence(text, needle):
  with pytest.raises(UserError, match=needle):
    precision.validate(text, 'config.precisions')


def test_runner_builds_each_suffix_with_its_builder(monkeypatch):
  """'w4a4:pact' -> quant.build at w4a4 with method pact; 'w4a4:dq' -> the
  defenses' build; the model under test carries the suffix's method."""
  import types  # pylint: disable=g-import-not-at-top
  seen = []

  def fake(name):
    def build(request):
      seen.append((name, request.precision,
                   dict(request.qconfig).get('method')))
      return {'apply': None, 'variables': None, 'grad_apply': None,
              'serve_apply': None, 'serve_variables': None} | (
                  {'method': 'dq'} if name == 'defense' else
                  {'method': dict(request.qconfig)['method']})
    return build

  monkeypatch.setattr(runner.quant, 'build', fake('quant'))
  monkeypatch.setattr(runner.defense_build, 'build', fake('defense'))
  _, config = _robustmq('sample_quick')
  config.precisions = ('fp32', 'w4a4:pact', 'w2a2:dorefa', 'w4a4', 'w4a4:dq')
  settings = settings_lib.from_config(config)
  float_mut = types.SimpleNamespace(variables={})
  info = types.SimpleNamespace(image_size=32)
  methods = [runner._quantized_model_under_test(
      settings, name='resnet20_cifar', float_mut=float_mut,
      float_spec={'num_classes': 10}, precision=p, train_set=None, info=info,
      cache_dir='/nonexistent', mesh=None).method
             for p in settings.precisions[1:]]
  assert seen == [('quant', 'w4a4', 'pact'), ('quant', 'w2a2', 'dorefa'),
                  ('quant', 'w4a4', 'lsq'), ('defense', 'w4a4:dq', 'lsq')]
  assert methods == ['pact', 'dorefa', 'lsq', 'dq']
