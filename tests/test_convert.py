"""Parity tests for the pretrained-weight converters (no downloads).

Reference: the same architecture in PyTorch (torchvision 0.28 / timm 1.0)
with random weights and random BatchNorm statistics, evaluated in eval mode on
the same batch. Tolerance: max |ours - torch| <= 1e-4 * max |torch logits|
(float32, different summation orders). The big_vision cases rename a timm
model's converted weights into npz layouts (old vision_transformer, modern
big_vision, scanned big_vision) and compare against the timm model.
"""

import functools
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from robustmq_jax import checkpoints
from robustmq_jax import models
from robustmq_jax.errors import UserError
from tests import torch_shims

torch = torch_shims.import_torch()

_REL_TOL = 1e-4
_BATCH = 2


def _images(size=224, seed=0):
  rng = np.random.default_rng(seed)
  return rng.uniform(size=(_BATCH, size, size, 3)).astype(np.float32)


def _randomize(model):
  """Random BN statistics and perturbed weights, so every tensor matters."""
  gen = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.02 * torch.randn(p.shape, generator=gen))
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.copy_(0.3 * torch.randn(m.num_features,
                                               generator=gen))
        m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
  return model.eval()


def _torch_logits(model, x, mean, std):
  xt = torch.from_numpy(x).permute(0, 3, 1, 2)
  mean = torch.tensor(mean).view(1, 3, 1, 1)
  std = torch.tensor(std).view(1, 3, 1, 1)
  with torch.no_grad():
    return model((xt - mean) / std).numpy()


@functools.lru_cache(maxsize=None)
def _jitted_apply(name, num_classes, frozen_kwargs):
  module = models.get_model(name, num_classes=num_classes,
                            **dict(frozen_kwargs))
  return jax.jit(module.apply)


def _ours(name, variables, kwargs, x):
  apply = _jitted_apply(name, _num_classes(name, variables),
                        tuple(sorted(kwargs.items())))
  return np.asarray(apply(variables, x))


def _num_classes(name, variables):
  head = 'fc' if models.model_info(name).family == 'resnet' else 'head'
  return variables['params'][head]['kernel'].shape[-1]


def _assert_parity(ours, ref):
  scale = np.abs(ref).max()
  assert scale > 0.1  # A meaningful reference, not all zeros.
  np.testing.assert_array_less(np.abs(ours - ref).max(), _REL_TOL * scale)


def _build(family, arch, **kwargs):
  if family == 'torchvision':
    tv = torch_shims.import_torchvision()
    return _randomize(getattr(tv.models, arch)(num_classes=10))
  timm = torch_shims.import_timm()
  return _randomize(timm.create_model(arch, num_classes=10, **kwargs))


@pytest.mark.parametrize('family,arch', [
    ('torchvision', 'resnet18'),
    ('torchvision', 'resnet50'),
    ('timm', 'resnet18'),
    ('timm', 'vit_tiny_patch16_224'),
    ('timm', 'vit_small_patch16_224'),
    ('timm', 'vit_base_patch16_224'),
    pytest.param('timm', 'resnet50', marks=pytest.mark.slow),
])
def test_torch_parity(family, arch):
  model = _build(family, arch)
  name, variables, kwargs = checkpoints.convert(family, arch,
                                                model.state_dict())
  assert name == arch
  if 'vit' in arch:  # timm AugReg defaults: [-1, 1] inputs, exact GELU.
    assert kwargs['mean'] == (0.5,) * 3 and not kwargs['gelu_approximate']
  else:
    assert kwargs['mean'] == models.normalize.IMAGENET_MEAN
  x = _images()
  _assert_parity(_ours(name, variables, kwargs, x),
                 _torch_logits(model, x, kwargs['mean'], kwargs['std']))


def _flatten(tree, prefix=''):
  out = {}
  for k, v in tree.items():
    key = f'{prefix}/{k}' if prefix else k
    out.update(_flatten(v, key) if isinstance(v, dict) else {key: v})
  return out


def _npz_layouts(params, depth):
  """Our params in three Google layouts (flat npz names)."""
  old = _flatten(params)  # vision_transformer: our names are its names.
  modern = {}
  pe = params['Transformer']['posembed_input']['pos_embedding']
  renames = {'LayerNorm_0': 'LayerNorm_0', 'LayerNorm_2': 'LayerNorm_1',
             'MultiHeadDotProductAttention_1': 'MultiHeadDotProductAttention_0',
             'MlpBlock_3': 'MlpBlock_0'}
  for key, value in old.items():
    if 'posembed_input' in key:
      continue
    for ours, theirs in renames.items():
      key = key.replace(f'/{ours}/', f'/{theirs}/')
    modern['params/' + key] = value
  # big_vision adds patch posembs before the cls concat.
  modern['params/pos_embedding'] = pe[:, 1:]
  modern['params/cls'] = params['cls'] + pe[:, :1]
  scanned = {k: v for k, v in modern.items() if '/encoderblock_' not in k}
  for key in [k for k in modern if '/encoderblock_0/' in k]:
    scanned[key.replace('encoderblock_0', 'encoderblock')] = np.stack(
        [modern[key.replace('_0/', f'_{i}/', 1)] for i in range(depth)])
  return {'old': old, 'modern': modern, 'scanned': scanned}


@pytest.fixture(scope='module')
def tanh_vit():
  """A timm ViT-Ti/16 with tanh GELU (as Google's npz ViTs) and our params."""
  arch = 'vit_tiny_patch16_224'
  model = _build('timm', arch, act_layer='gelu_tanh')
  _, variables, _ = checkpoints.convert('timm', arch, model.state_dict())
  return model, variables


@pytest.mark.parametrize('layout', ['old', 'modern', 'scanned'])
def test_big_vision_npz_parity(layout, tmp_path, tanh_vit):
  arch = 'vit_tiny_patch16_224'
  model, variables = tanh_vit
  flat = _npz_layouts(variables['params'], depth=12)[layout]
  path = os.path.join(tmp_path, 'vit.npz')
  np.savez(path, **flat)
  name, converted, kwargs = checkpoints.convert(
      'big_vision', arch, checkpoints.read_weights(path))
  assert kwargs['gelu_approximate'] and kwargs['std'] == (0.5,) * 3
  x = _images(seed=1)
  _assert_parity(_ours(name, converted, kwargs, x),
                 _torch_logits(model, x, kwargs['mean'], kwargs['std']))


def test_big_vision_gap_sincos_round_trip():
  """A gap/sincos2d big_vision ViT (no cls, no posemb param) loads as such."""
  arch = 'vit_tiny_patch16_224'
  module = models.get_model(arch, num_classes=5, pool='gap', posemb='sincos2d',
                            gelu_approximate=True, mean=(0.5,) * 3,
                            std=(0.5,) * 3)
  x = _images(seed=2)
  shapes = jax.eval_shape(module.init, jax.random.key(0), x[:1])
  rng = np.random.default_rng(0)
  variables = jax.tree.map(
      lambda s: rng.normal(scale=0.05, size=s.shape).astype(np.float32),
      shapes)
  flat = _flatten(variables['params'])
  flat = {'params/' + k.replace('LayerNorm_2', 'LayerNorm_1')
          .replace('MultiHeadDotProductAttention_1',
                   'MultiHeadDotProductAttention_0')
          .replace('MlpBlock_3', 'MlpBlock_0'): v for k, v in flat.items()}
  name, converted, kwargs = checkpoints.convert('big_vision', arch, flat)
  assert kwargs['pool'] == 'gap' and kwargs['posemb'] == 'sincos2d'
  np.testing.assert_array_equal(_ours(name, converted, kwargs, x),
                                jax.jit(module.apply)(variables, x))


def test_posemb_sincos_2d_values():
  pe = models.vit.posemb_sincos_2d(2, 3, 8)
  assert pe.shape == (1, 6, 8)
  # Token (row 1, col 2): x = 2, y = 1; omega = 10000 ** -[0, 1].
  omega = np.array([1.0, 1e-4])
  np.testing.assert_allclose(
      pe[0, 5], np.concatenate([np.sin(2 * omega), np.cos(2 * omega),
                                np.sin(omega), np.cos(omega)]), rtol=1e-6)


def test_cli_round_trip_and_hub_config(tmp_path):
  """File -> scripts/convert_weights.py -> load gives the same logits."""
  timm = torch_shims.import_timm()
  model = _randomize(timm.create_model('resnet18', num_classes=3))
  from safetensors.torch import save_file  # pylint: disable=g-import-not-at-top
  src = os.path.join(tmp_path, 'model.safetensors')
  save_file(model.state_dict(), src)
  with open(os.path.join(tmp_path, 'config.json'), 'w') as f:
    json.dump({'pretrained_cfg': {'mean': [0.4, 0.4, 0.4],
                                  'std': [0.2, 0.2, 0.2]}}, f)
  out = os.path.join(tmp_path, 'ckpt')
  proc = subprocess.run(
      [sys.executable, 'scripts/convert_weights.py', '--family=timm',
       '--arch=resnet18', f'--input={src}', f'--output={out}'],
      capture_output=True, text=True, check=False,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert proc.returncode == 0, proc.stderr
  module, variables, spec = checkpoints.load(out)
  assert spec['model'] == 'resnet18' and spec['num_classes'] == 3
  assert tuple(spec['model_kwargs']['mean']) == (0.4, 0.4, 0.4)
  x = _images(seed=3)
  ref = _torch_logits(model, x, (0.4,) * 3, (0.2,) * 3)
  _assert_parity(np.asarray(jax.jit(module.apply)(variables, x)), ref)
  assert module.mean == (0.4, 0.4, 0.4)
  _, direct, kwargs = checkpoints.convert('timm', 'resnet18',
                                          checkpoints.read_weights(src),
                                          mean=(0.4,) * 3, std=(0.2,) * 3)
  np.testing.assert_array_equal(_ours('resnet18', direct, kwargs, x),
                                _ours('resnet18', variables, kwargs, x))


def test_bad_inputs(tmp_path):
  tv = torch_shims.import_torchvision()
  state = tv.models.resnet18(num_classes=4).state_dict()
  with pytest.raises(UserError, match="family='caffe'"):
    checkpoints.convert('caffe', 'resnet18', state)
  with pytest.raises(UserError, match="arch='vit_tiny_patch16_224'"):
    checkpoints.convert('torchvision', 'vit_tiny_patch16_224', state)
  with pytest.raises(UserError, match="arch='resnet50'"):
    checkpoints.convert('timm', 'resnet50', state)
  with pytest.raises(UserError, match='does not use'):
    checkpoints.convert('timm', 'resnet18',
                        {**state, 'extra.weight': torch.zeros(3)})
  with pytest.raises(UserError, match='does not exist'):
    checkpoints.read_weights(os.path.join(tmp_path, 'none.pth'))
  pickled = os.path.join(tmp_path, 'whole_model.pth')
  torch.save(tv.models.resnet18(num_classes=4), pickled)
  with pytest.raises(UserError, match='weights_only'):
    checkpoints.read_weights(pickled)
  wrapped = os.path.join(tmp_path, 'wrapped.pth')
  torch.save({'state_dict': state, 'epoch': 3}, wrapped)
  assert set(checkpoints.read_weights(wrapped)) == set(state)
  proc = subprocess.run(
      [sys.executable, 'scripts/convert_weights.py', '--family=timm',
       '--arch=resnet18', f'--input={pickled}', f'--output={tmp_path}/o'],
      capture_output=True, text=True, check=False,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert proc.returncode == 2
  assert proc.stderr.strip().count('\n') == 0, proc.stderr
  assert 'weights_only' in proc.stderr
