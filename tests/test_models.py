"""Tests for robustmq_jax.models: shapes, parameter layout, Ops seam."""

import functools

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from robustmq_jax import models
from robustmq_jax.errors import UserError
from robustmq_jax.models.ops import Ops

_ALL = models.list_models()
_SMALL = ['resnet20_cifar', 'vit_tiny_patch4_32']
# The first (stem) and last (classifier) contraction of each family.
_FIRST = {'resnet': 'conv1', 'regnet': 'stem_conv', 'mobilenet': 'conv_stem',
          'vit': 'embedding'}
_LAST = {'resnet': 'fc', 'regnet': 'fc', 'mobilenet': 'classifier',
         'vit': 'head'}


def _shapes(module, size, batch=1):
  x = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
  variables = jax.eval_shape(module.init, jax.random.key(0), x)
  out = jax.eval_shape(module.apply, variables, x)
  return variables, out


def _flat(tree):
  return {'/'.join(k.key for k in path): tuple(v.shape)
          for path, v in jax.tree_util.tree_leaves_with_path(tree)}


def _random_variables(module, size, seed=0):
  """Random variables without compiling `init` (slow under CPU contention)."""
  shapes = jax.eval_shape(module.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, size, size, 3),
                                               jnp.float32))
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map_with_path(
      lambda p, s: (np.abs(rng.normal(size=s.shape)) + 0.5
                    if p[-1].key == 'var' else
                    rng.normal(size=s.shape) * 0.1).astype(np.float32),
      shapes)


def _torchvision_resnet_tree(stage_sizes, bottleneck, num_classes):
  """Expected params (Flax names, shapes) derived from torchvision's layout."""
  params, stats = {}, {}

  def conv(name, k, cin, cout):
    params[f'{name}/kernel'] = (k, k, cin, cout)

  def bn(name, c):
    params[f'{name}/scale'] = params[f'{name}/bias'] = (c,)
    stats[f'{name}/mean'] = stats[f'{name}/var'] = (c,)

  conv('conv1', 7, 3, 64)
  bn('bn1', 64)
  cin = 64
  for s, n in enumerate(stage_sizes):
    width = 64 * 2 ** s
    cout = width * (4 if bottleneck else 1)
    for i in range(n):
      p = f'layer{s + 1}_{i}'
      if bottleneck:
        convs = [(1, cin, width), (3, width, width), (1, width, cout)]
      else:
        convs = [(3, cin, width), (3, width, width)]
      for j, (k, a, b) in enumerate(convs):
        conv(f'{p}/conv{j + 1}', k, a, b)
        bn(f'{p}/bn{j + 1}', b)
      if i == 0 and (s > 0 or cin != cout):
        conv(f'{p}/downsample_conv', 1, cin, cout)
        bn(f'{p}/downsample_bn', cout)
      cin = cout
  params['fc/kernel'] = (cin, num_classes)
  params['fc/bias'] = (num_classes,)
  return params, stats


def _vit_tree(patch, dim, depth, heads, mlp, num_classes, tokens):
  """Expected params in the google-research/vision_transformer npz layout."""
  hd = dim // heads
  params = {'embedding/kernel': (patch, patch, 3, dim),
            'embedding/bias': (dim,), 'cls': (1, 1, dim),
            'Transformer/posembed_input/pos_embedding': (1, tokens, dim),
            'Transformer/encoder_norm/scale': (dim,),
            'Transformer/encoder_norm/bias': (dim,),
            'head/kernel': (dim, num_classes), 'head/bias': (num_classes,)}
  for i in range(depth):
    b = f'Transformer/encoderblock_{i}'
    for ln in ('LayerNorm_0', 'LayerNorm_2'):
      params[f'{b}/{ln}/scale'] = params[f'{b}/{ln}/bias'] = (dim,)
    a = f'{b}/MultiHeadDotProductAttention_1'
    for n in ('query', 'key', 'value'):
      params[f'{a}/{n}/kernel'] = (dim, heads, hd)
      params[f'{a}/{n}/bias'] = (heads, hd)
    params[f'{a}/out/kernel'] = (heads, hd, dim)
    params[f'{a}/out/bias'] = (dim,)
    m = f'{b}/MlpBlock_3'
    params[f'{m}/Dense_0/kernel'] = (dim, mlp)
    params[f'{m}/Dense_0/bias'] = (mlp,)
    params[f'{m}/Dense_1/kernel'] = (mlp, dim)
    params[f'{m}/Dense_1/bias'] = (dim,)
  return params


@pytest.mark.parametrize('name', _ALL)
def test_output_shape_and_info(name):
  info = models.model_info(name)
  assert info.name == name
  assert info.family in ('resnet', 'regnet', 'mobilenet', 'vit')
  assert info.image_size in (32, 224)
  variables, out = _shapes(models.get_model(name, num_classes=7),
                           info.image_size, batch=2)
  assert out.shape == (2, 7) and out.dtype == jnp.float32
  assert ('batch_stats' in variables) == info.has_batch_stats


@pytest.mark.parametrize('name,stages,bottleneck,count', [
    ('resnet18', (2, 2, 2, 2), False, 11_689_512),
    ('resnet50', (3, 4, 6, 3), True, 25_557_032),
])
def test_resnet_matches_torchvision_layout(name, stages, bottleneck, count):
  variables, _ = _shapes(models.get_model(name, num_classes=1000), 224)
  params, stats = _torchvision_resnet_tree(stages, bottleneck, 1000)
  assert _flat(variables['params']) == params
  assert _flat(variables['batch_stats']) == stats
  # torchvision's published parameter counts.
  assert sum(np.prod(s) for s in params.values()) == count


@pytest.mark.parametrize('name,cfg,count', [
    ('vit_tiny_patch16_224', (16, 192, 12, 3, 768), 5_717_416),
    ('vit_small_patch16_224', (16, 384, 12, 6, 1536), 22_050_664),
    ('vit_base_patch16_224', (16, 768, 12, 12, 3072), 86_567_656),
    ('vit_tiny_patch4_32', (4, 96, 4, 3, 192), None),
])
def test_vit_matches_npz_layout(name, cfg, count):
  size = models.model_info(name).image_size
  variables, _ = _shapes(models.get_model(name, num_classes=1000), size)
  tokens = (size // cfg[0]) ** 2 + 1
  expected = _vit_tree(*cfg, 1000, tokens)
  assert set(variables) == {'params'}
  assert _flat(variables['params']) == expected
  if count is not None:  # timm's parameter counts.
    assert sum(np.prod(s) for s in expected.values()) == count


def test_cifar_resnets_layout():
  variables, _ = _shapes(models.get_model('resnet20_cifar', num_classes=10),
                         32)
  flat = _flat(variables['params'])
  assert flat['conv1/kernel'] == (3, 3, 3, 16)
  assert flat['layer2_0/downsample_conv/kernel'] == (1, 1, 16, 32)
  assert flat['layer3_2/conv2/kernel'] == (3, 3, 64, 64)
  assert 'layer1_0/downsample_conv/kernel' not in flat
  assert flat['fc/kernel'] == (64, 10)
  assert sum(np.prod(s) for s in flat.values()) == 272_474
  variables, _ = _shapes(models.get_model('resnet18_cifar', num_classes=10),
                         32)
  assert _flat(variables['params'])['conv1/kernel'] == (3, 3, 3, 64)


@pytest.mark.parametrize('name', _SMALL)
def test_forward_and_train_mode(name):
  model = models.get_model(name, num_classes=5)
  x = jax.random.uniform(jax.random.key(1), (3, 32, 32, 3))
  variables = _random_variables(model, 32)
  apply = jax.jit(model.apply, static_argnames=('train', 'mutable'))
  logits = apply(variables, x)
  assert logits.shape == (3, 5)
  assert np.all(np.isfinite(logits))
  # Examples are processed independently in eval mode.
  np.testing.assert_allclose(apply(variables, x[:1]), logits[:1],
                             atol=1e-5, rtol=1e-5)
  if models.model_info(name).has_batch_stats:
    logits_t, updates = apply(variables, x, train=True,
                              mutable=('batch_stats',))
    assert logits_t.shape == (3, 5)
    before = jax.tree.leaves(variables['batch_stats'])
    after = jax.tree.leaves(updates['batch_stats'])
    assert any(not np.allclose(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize('name', _SMALL)
def test_normalisation_is_inside(name):
  mean, std = (0.2, 0.5, 0.7), (0.1, 0.3, 0.2)
  model = models.get_model(name, num_classes=4, mean=mean, std=std)
  plain = models.get_model(name, num_classes=4, mean=(0., 0., 0.),
                           std=(1., 1., 1.))
  z = jax.random.normal(jax.random.key(2), (2, 32, 32, 3))
  variables = _random_variables(plain, 32)
  pixels = z * jnp.asarray(std) + jnp.asarray(mean)
  np.testing.assert_allclose(jax.jit(model.apply)(variables, pixels),
                             jax.jit(plain.apply)(variables, z),
                             atol=1e-4, rtol=1e-4)
  # Same parameter tree: normalisation has no parameters.
  assert _flat(variables) == _flat(
      jax.eval_shape(model.init, jax.random.key(0), z))


class _Recorder(nn.Module):
  """Stands in for a quantized contraction (a Flax module, like AQT's)."""
  fn: callable
  role: models.Role
  ops: '_CountingOps'

  def __call__(self, *args, **kwargs):
    self.ops.log.append(self.role)
    return self.fn(*args, **kwargs)


class _CountingOps(Ops):
  """Routes every contraction through `_Recorder`, logging its role."""

  def __init__(self):
    self.log = []

  def dot_general_cls(self, role):
    return functools.partial(_Recorder, lax.dot_general, role, self)

  def conv_general_dilated_cls(self, role):
    return functools.partial(_Recorder, lax.conv_general_dilated, role,
                             self)

  def einsum(self, role):
    return _Recorder(jnp.einsum, role, self)


@pytest.mark.parametrize('name', _ALL)
def test_every_contraction_goes_through_ops(name):
  size = models.model_info(name).image_size
  ops = _CountingOps()
  ref, _ = _shapes(models.get_model(name, num_classes=10), size)
  variables, out = _shapes(models.get_model(name, num_classes=10, ops=ops),
                           size)
  assert out.shape == (1, 10)
  assert _flat(variables) == _flat(ref)  # Parameter names unchanged.
  ops.log.clear()
  jax.eval_shape(models.get_model(name, num_classes=10, ops=ops).apply,
                 ref, jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
  kernels = {k[:-len('/kernel')] for k in _flat(ref['params'])
             if k.endswith('/kernel')}
  roles = {r.path: r for r in ops.log}
  assert len(roles) == len(ops.log)  # Each contraction called once.
  einsums = {p for p, r in roles.items() if r.kind == 'einsum'}
  assert set(roles) - einsums == kernels
  if models.model_info(name).family == 'vit':
    depth = len([k for k in kernels if k.endswith('/query')])
    assert len(einsums) == 2 * depth
    assert {p.rsplit('/', 1)[1] for p in einsums} == {'qk', 'pv'}
  else:
    assert not einsums
  family = models.model_info(name).family
  assert [p for p, r in roles.items() if r.first] == [_FIRST[family]]
  assert [p for p, r in roles.items() if r.last] == [_LAST[family]]
  for path, role in roles.items():
    kind = 'conv' if ('conv' in path or path == 'embedding') else 'dense'
    assert role.kind == ('einsum' if path in einsums else kind), path


def test_gelu_flavour_changes_vit_output():
  x = jax.random.uniform(jax.random.key(3), (2, 32, 32, 3))
  exact = models.get_model('vit_tiny_patch4_32', num_classes=3)
  tanh = models.get_model('vit_tiny_patch4_32', num_classes=3,
                          gelu_approximate=True)
  variables = _random_variables(exact, 32)
  a = jax.jit(exact.apply)(variables, x)
  b = jax.jit(tanh.apply)(variables, x)
  assert not np.allclose(a, b, atol=0, rtol=0)
  np.testing.assert_allclose(a, b, atol=1e-2)


def test_gap_and_sincos_vit():
  model = models.get_model('vit_tiny_patch4_32', num_classes=3, pool='gap',
                           posemb='sincos2d')
  variables, out = _shapes(model, 32)
  flat = _flat(variables['params'])
  assert 'cls' not in flat
  assert not any('pos_embedding' in k for k in flat)
  assert out.shape == (1, 3)


def test_unknown_model_and_kwarg():
  with pytest.raises(UserError, match=r"model='nope'.*resnet18"):
    models.get_model('nope', num_classes=10)
  with pytest.raises(UserError, match="model='nope'"):
    models.model_info('nope')
  with pytest.raises(UserError, match='model_kwargs.colour'):
    models.get_model('resnet18', num_classes=10, colour=1)
  # JSON lists are accepted for tuple fields.
  m = models.get_model('resnet18', num_classes=2, mean=[0.5, 0.5, 0.5])
  assert m.mean == (0.5, 0.5, 0.5)
