"""RegNetX-600MF and MobileNetV2 (and their 32x32 twins): layout and parity.

Shapes and names are checked against the public layouts (timm
``regnetx_006`` / ``mobilenetv2_100`` names, parameter counts from
REFERENCE §13); the converters are checked for logit parity against timm and
torchvision models with random weights and random BatchNorm statistics, in
eval mode, on 64x64 inputs (the models are fully convolutional, so a small
input exercises every tensor at a fraction of the 224 cost).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustmq_jax import checkpoints
from robustmq_jax import models
from robustmq_jax.errors import UserError
from robustmq_jax.models import random_init
from tests import torch_shims

_REL_TOL = 1e-4


def _flat(tree):
  return {'/'.join(k.key for k in path): tuple(v.shape)
          for path, v in jax.tree_util.tree_leaves_with_path(tree)}


def _variables(name, num_classes=1000):
  size = models.model_info(name).image_size
  module = models.get_model(name, num_classes=num_classes)
  return jax.eval_shape(module.init, jax.random.key(0),
                        jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))


@pytest.mark.parametrize('name,count', [
    ('regnetx_600mf', 6_196_040),  # timm regnetx_006.
    ('regnetx_800mf', 7_259_656),  # torchvision regnet_x_800mf.
    ('mobilenet_v2', 3_504_872),  # timm mobilenetv2_100 / torchvision.
])
def test_parameter_counts(name, count):
  params = _flat(_variables(name)['params'])
  assert sum(np.prod(s) for s in params.values()) == count


def test_regnetx_600mf_layout():
  v = _variables('regnetx_600mf')
  p, stats = _flat(v['params']), _flat(v['batch_stats'])
  assert p['stem_conv/kernel'] == (3, 3, 3, 32)
  assert p['s1_b1/conv1/kernel'] == (1, 1, 32, 48)
  assert p['s1_b1/conv2/kernel'] == (3, 3, 24, 48)  # Group width 24.
  assert p['s1_b1/downsample_conv/kernel'] == (1, 1, 32, 48)
  assert p['s4_b7/conv2/kernel'] == (3, 3, 24, 528)
  assert 's4_b2/downsample_conv/kernel' not in p
  assert p['fc/kernel'] == (528, 1000)
  depths = {s: max(int(k.split('_b')[1].split('/')[0]) for k in p
                   if k.startswith(f's{s}_b')) for s in range(1, 5)}
  assert depths == {1: 1, 2: 3, 3: 5, 4: 7}
  assert stats['s3_b5/bn3/var'] == (240,)


def test_mobilenet_v2_layout():
  v = _variables('mobilenet_v2')
  p = _flat(v['params'])
  assert p['conv_stem/kernel'] == (3, 3, 3, 32)
  assert p['blocks_0_0/conv_dw/kernel'] == (3, 3, 1, 32)  # Depthwise.
  assert p['blocks_0_0/conv_pw/kernel'] == (1, 1, 32, 16)
  assert p['blocks_1_0/conv_pw/kernel'] == (1, 1, 16, 96)
  assert p['blocks_1_0/conv_dw/kernel'] == (3, 3, 1, 96)
  assert p['blocks_1_0/conv_pwl/kernel'] == (1, 1, 96, 24)
  assert p['blocks_6_0/conv_pwl/kernel'] == (1, 1, 960, 320)
  assert p['conv_head/kernel'] == (1, 1, 320, 1280)
  assert p['classifier/kernel'] == (1280, 1000)
  blocks = {k.split('/')[0] for k in p if k.startswith('blocks_')}
  assert len(blocks) == 17


@pytest.mark.parametrize('name', ['regnetx_cifar', 'mobilenet_v2_cifar'])
def test_twins_forward_train_and_independence(name):
  assert models.model_info(name).image_size == 32
  model = models.get_model(name, num_classes=5)
  variables = random_init.he_normal_variables(model, 32)
  x = jax.random.uniform(jax.random.key(1), (3, 32, 32, 3))
  apply = jax.jit(model.apply, static_argnames=('train', 'mutable'))
  logits = apply(variables, x)
  assert logits.shape == (3, 5) and np.all(np.isfinite(logits))
  np.testing.assert_allclose(apply(variables, x[:1]), logits[:1],
                             atol=1e-5, rtol=1e-5)
  _, updates = apply(variables, x, train=True, mutable=('batch_stats',))
  before = jax.tree.leaves(variables['batch_stats'])
  after = jax.tree.leaves(updates['batch_stats'])
  assert any(not np.allclose(a, b) for a, b in zip(before, after))


def test_json_lists_become_hashable_fields():
  model = models.get_model(
      'mobilenet_v2_cifar', num_classes=3,
      settings=[[1, 8, 1, 1], [6, 16, 1, 2]], head_width=32)
  assert model.settings == ((1, 8, 1, 1), (6, 16, 1, 2))
  hash(model)


# ---------------------------------------------------------------- parity.

def _randomize(model):
  torch = torch_shims.import_torch()
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


def _torch_model(family, arch):
  if family == 'torchvision':
    tv = torch_shims.import_torchvision()
    if arch in ('mobilenet_v2', 'regnet_x_800mf'):
      return getattr(tv.models, arch)(num_classes=10)
    # torchvision has no 600MF RegNet; its RegNet class with timm
    # regnetx_006's parameters (w0 48, wa 36.97, wm 2.24, group width 24).
    from torchvision.models import regnet  # pylint: disable=g-import-not-at-top
    params = regnet.BlockParams.from_init_params(
        depth=16, w_0=48, w_a=36.97, w_m=2.24, group_width=24)
    return regnet.RegNet(params, num_classes=10)
  timm = torch_shims.import_timm()
  return timm.create_model({'regnetx_600mf': 'regnetx_006',
                            'mobilenet_v2': 'mobilenetv2_100'}[arch],
                           num_classes=10)


@pytest.mark.parametrize('family,source,arch', [
    ('torchvision', 'regnetx_600mf', 'regnetx_600mf'),
    ('timm', 'regnetx_600mf', 'regnetx_600mf'),
    ('torchvision', 'mobilenet_v2', 'mobilenet_v2'),
    ('timm', 'mobilenet_v2', 'mobilenet_v2'),
    ('torchvision', 'regnet_x_800mf', 'regnetx_800mf'),
])
def test_converter_logit_parity(family, source, arch):
  torch = torch_shims.import_torch()
  model = _randomize(_torch_model(family, source))
  name, variables, kwargs = checkpoints.convert(family, arch,
                                                model.state_dict())
  assert name == arch
  assert kwargs['mean'] == models.normalize.IMAGENET_MEAN
  assert checkpoints.convert_file  # The CLI path shares `convert`.
  x = np.random.default_rng(0).uniform(size=(2, 64, 64, 3)).astype(
      np.float32)
  module = models.get_model(name, num_classes=10, **kwargs)
  ours = np.asarray(jax.jit(module.apply)(variables, x))
  xt = torch.from_numpy(x).permute(0, 3, 1, 2)
  mean = torch.tensor(kwargs['mean']).view(1, 3, 1, 1)
  std = torch.tensor(kwargs['std']).view(1, 3, 1, 1)
  with torch.no_grad():
    ref = model((xt - mean) / std).numpy()
  scale = np.abs(ref).max()
  assert scale > 0.1
  assert np.abs(ours - ref).max() <= _REL_TOL * scale


def test_converter_rejects_the_other_architecture():
  timm = torch_shims.import_timm()
  state = timm.create_model('mobilenetv2_100', num_classes=10).state_dict()
  with pytest.raises(UserError):
    checkpoints.convert('timm', 'regnetx_600mf', state)
