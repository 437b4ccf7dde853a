"""BatchNorm folding (MQBench academic ``bnfold``) as a quantization option.

Reference: the unfolded float model. Folding must not change the float
model in eval mode; with ``bn_fold`` the quantizer rounds the *folded*
kernels (PTQ and QAT) and evaluates BatchNorm as a bias only.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from robustmq_jax import models
from robustmq_jax import quant
from robustmq_jax.data.sample import SampleDataset
from robustmq_jax.models import layers
from robustmq_jax.models import random_init
from robustmq_jax.quant import bnfold
from robustmq_jax.quant import qat
from robustmq_jax.quant import reference
from robustmq_jax.quant.plan import LayerQuant
from robustmq_jax.quant.plan import TensorQuant

TINY = {
    'resnet20_cifar': {'stage_sizes': (1, 1), 'widths': (4, 8)},
    'regnetx_cifar': {'depths': (1, 1), 'widths': (8, 16), 'group_width': 4,
                      'stem_width': 8, 'stage_strides': (1, 2)},
    'mobilenet_v2_cifar': {'settings': ((1, 8, 1, 1), (6, 8, 2, 2)),
                           'stem_width': 8, 'head_width': 16},
}


@functools.cache
def _float(name):
  """Random weights with random BatchNorm affine parameters and statistics."""
  module = models.get_model(name, num_classes=10, **TINY[name])
  v = random_init.he_normal_variables(module, 32, seed=1)
  rng = np.random.default_rng(2)

  def perturb(path, a):
    key = path[-1].key
    if key == 'scale':
      return (0.5 + rng.uniform(size=a.shape)).astype(np.float32)
    if key in ('bias', 'mean'):
      return (0.2 * rng.normal(size=a.shape)).astype(np.float32)
    if key == 'var':
      return (0.3 + rng.uniform(size=a.shape)).astype(np.float32)
    return a

  return module, jax.tree_util.tree_map_with_path(perturb, v)


@functools.cache
def _data():
  images, labels = SampleDataset('train').arrays()
  return images[:64], labels[:64]


def _x():
  return _data()[0][:8].astype(np.float32) / 255.0


def test_pairs_are_found_by_tracing():
  counts = {name: len(bnfold.conv_bn_pairs(
      models.get_model(name, num_classes=10, **TINY[name]), 32))
            for name in TINY}
  # ResNet: stem + 2 blocks x 2 convs + 1 projection; RegNetX: stem +
  # 2 blocks x 3 + 1 projection (stage 1 keeps 8 channels); MobileNetV2:
  # stem + 2 + 2 x 3 + head.
  assert counts == {'resnet20_cifar': 6, 'regnetx_cifar': 8,
                    'mobilenet_v2_cifar': 10}
  vit = models.get_model('vit_tiny_patch4_32', num_classes=10)
  assert not bnfold.conv_bn_pairs(vit, 32)


@pytest.mark.parametrize('name', sorted(TINY))
def test_folded_float_model_equals_unfolded(name):
  module, v = _float(name)
  pairs = bnfold.conv_bn_pairs(module, 32)
  folded = bnfold.fold_batchnorm(v, pairs)
  apply = jax.jit(lambda v, x: module.apply(v, x, train=False))
  want, got = np.asarray(apply(v, _x())), np.asarray(apply(folded, _x()))
  np.testing.assert_allclose(got, want, rtol=1e-4,
                             atol=1e-5 * np.abs(want).max())
  for p in pairs:  # Every BatchNorm is a bias now; inputs untouched.
    bn = folded['params']
    for k in p.bn.split('/'):
      bn = bn[k]
    np.testing.assert_array_equal(bn['scale'], 1.0)
  assert not np.allclose(v['params'][pairs[0].conv]['kernel'],
                         folded['params'][pairs[0].conv]['kernel'])


def _spec(method='ptq', bn_fold=True, steps=0, precision='w4a4'):
  qc = quant.default_config().to_dict()
  qc.update(num_calib_batches=1, calib_batch_size=32, method=method,
            bn_fold=bn_fold)
  qc['qat'].update(steps=steps, batch_size=16, warmup_steps=0)
  return quant.parse_spec(precision, qc)


def test_spec_option_off_by_default_and_fingerprint_unchanged():
  assert not quant.parse_spec('w4a4', quant.default_config()).bn_fold
  off = _spec(bn_fold=False).fingerprint()
  assert 'bn_fold' not in off  # Shipped checkpoints keep matching.
  assert _spec(bn_fold=True).fingerprint()['bn_fold'] is True


def test_ptq_quantizes_the_folded_kernels():
  name = 'mobilenet_v2_cifar'
  module, v = _float(name)
  images, labels = _data()
  qm = quant.quantize_model(name, 10, TINY[name], v, _spec(), images,
                            labels)
  assert qm.meta['bn_folded'] == 10
  folded = bnfold.fold_batchnorm(v, bnfold.conv_bn_pairs(module, 32))
  scales = quant.pipeline.scales_of(qm.plan, qm.variables)
  for path in ('blocks_1_0/conv_dw', 'blocks_1_1/conv_pwl'):
    w = folded['params'][path.split('/')[0]][path.split('/')[1]]['kernel']
    s = scales[path]['rhs']
    got = qm.variables['params'][path.split('/')[0]][path.split('/')[1]][
        'kernel']
    np.testing.assert_array_equal(
        got, reference.dequantize_np(
            reference.quantize_np(w, s, qm.plan[path].rhs.bits), s))
  # At 8 bits the folded quantized model stays close to the float one.
  q8 = quant.quantize_model(name, 10, TINY[name], v,
                            _spec(precision='w8a8'), images, labels)
  want = np.asarray(jax.jit(lambda v, x: module.apply(v, x, train=False))(
      v, _x()))
  got = np.asarray(jax.jit(q8.apply_fn())(q8.variables, _x()))
  assert np.abs(got - want).max() < 0.1 * np.abs(want).max()
  serve_apply, serve_vars = q8.serve()
  np.testing.assert_allclose(jax.jit(serve_apply)(serve_vars, _x()), got,
                             rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # About 60 s each on 2 cores (two QAT compiles).
@pytest.mark.parametrize('method', ['lsq', 'dorefa'])
def test_qat_with_folding_exports_a_folded_model(method):
  name = 'regnetx_cifar'
  module, v = _float(name)
  images, labels = _data()
  qm0 = quant.quantize_model(name, 10, TINY[name], v,
                             _spec(method, steps=0, precision='w8a8'),
                             images, labels)
  qm2 = quant.quantize_model(name, 10, TINY[name], v,
                             _spec(method, steps=2, precision='w8a8'),
                             images, labels)
  assert qm2.meta['bn_folded'] == 8
  for qm in (qm0, qm2):
    bn = qm.variables['params']['s1_b1']['bn2']
    np.testing.assert_array_equal(bn['scale'], 1.0)
    np.testing.assert_array_equal(
        qm.variables['batch_stats']['s1_b1']['bn2']['mean'], 0.0)
  # Training updated the running statistics (now inside the folded biases).
  assert not np.allclose(qm0.variables['params']['s1_b1']['bn2']['bias'],
                         qm2.variables['params']['s1_b1']['bn2']['bias'])
  want = np.asarray(jax.jit(lambda v, x: module.apply(v, x, train=False))(
      v, _x()))
  got = np.asarray(jax.jit(qm0.apply_fn())(qm0.variables, _x()))
  if method == 'lsq':  # No step taken: the folded model at 8 bits.
    assert np.abs(got - want).max() < 0.1 * np.abs(want).max()
  assert np.all(np.isfinite(jax.jit(qm2.apply_fn())(qm2.variables, _x())))


class _ConvBn(nn.Module):
  """One grouped conv + BatchNorm + ReLU (a RegNet conv2), for QAT folding."""
  ops: Any = models.FLOAT_OPS

  @nn.compact
  def __call__(self, x, train=False):
    y = layers.conv(self.ops, '', 'conv', 8, 3, groups=2)(x)
    return nn.relu(layers.bn(train, 'bn')(y))


def test_qat_fold_is_pytorch_convbn2d():
  """Train mode: BN_batch(conv(x, Q(w f)) / f), f = gamma / sigma_running,
  gradient reaching gamma through f too; eval mode: the folded conv."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4, 6, 6, 8)).astype(np.float32)
  v = jax.tree.map(np.asarray, jax.eval_shape(
      _ConvBn().init, jax.random.key(0), x))
  v = {'params': {'conv': {'kernel': rng.normal(size=(3, 3, 4, 8)).astype(
                      np.float32) * 0.3},
                  'bn': {'scale': rng.uniform(0.5, 1.5, 8).astype(
                      np.float32),
                         'bias': rng.normal(size=8).astype(np.float32)}},
       'batch_stats': {'bn': {'mean': rng.normal(size=8).astype(np.float32),
                              'var': rng.uniform(0.5, 2, 8).astype(
                                  np.float32)}}}
  tq = TensorQuant(4, False, (0, 1, 2, 3))
  plan = {'conv': LayerQuant('conv', 'conv', None, tq, (3, 3, 4, 8))}
  ops = qat.QatOps(plan, 'pact', {'conv': {'rhs': np.float32(1.0)}},
                   {'conv': ('bn', 1e-5)})
  model = _ConvBn(ops)

  def ours(params, train):
    out = model.apply(dict(v, params=params), x, train=train,
                      mutable=['batch_stats'] if train else False)
    return out[0] if train else out

  def manual(params, train):
    gamma, beta = params['bn']['scale'], params['bn']['bias']
    mean, var = v['batch_stats']['bn']['mean'], v['batch_stats']['bn']['var']
    f = gamma / jnp.sqrt(var + 1e-5)
    wq, _ = qat.minmax_weight_quant(params['conv']['kernel'] * f, tq)
    y = lax.conv_general_dilated(x, wq, (1, 1), ((1, 1), (1, 1)),
                                 dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                 feature_group_count=2)
    if not train:  # The exported model: folded kernel, BN as a bias.
      return jax.nn.relu(y + beta - f * mean)
    y = y / f
    mu, sig2 = jnp.mean(y, (0, 1, 2)), jnp.var(y, (0, 1, 2))
    return jax.nn.relu((y - mu) / jnp.sqrt(sig2 + 1e-5) * gamma + beta)

  for train in (True, False):
    np.testing.assert_allclose(ours(v['params'], train),
                               manual(v['params'], train), rtol=1e-4,
                               atol=1e-4)
  # The running statistics keep being updated, from the batch statistics
  # of the unfolded conv output (conv(x, Q(w f)) / f), momentum 0.1 as in
  # PyTorch (MQBench's ConvBn2d trains with BN in train mode). The variance
  # kept is Flax's biased batch variance, as in the float models' own
  # training; PyTorch keeps the unbiased one (a factor n / (n - 1), n the
  # N*H*W positions per channel).
  _, new = model.apply(v, x, train=True, mutable=['batch_stats'])
  f = v['params']['bn']['scale'] / np.sqrt(v['batch_stats']['bn']['var']
                                           + 1e-5)
  wq, _ = qat.minmax_weight_quant(v['params']['conv']['kernel'] * f, tq)
  y = lax.conv_general_dilated(x, wq, (1, 1), ((1, 1), (1, 1)),
                               dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                               feature_group_count=2) / f
  for stat, batch in (('mean', jnp.mean(y, (0, 1, 2))),
                      ('var', jnp.var(y, (0, 1, 2)))):
    np.testing.assert_allclose(
        new['batch_stats']['bn'][stat],
        0.9 * v['batch_stats']['bn'][stat] + 0.1 * batch, rtol=1e-4,
        atol=1e-5)
  assert not np.allclose(new['batch_stats']['bn']['mean'],
                         v['batch_stats']['bn']['mean'])
  g = jax.grad(lambda p: jnp.sum(ours(p, True)**2))(v['params'])
  g_ref = jax.grad(lambda p: jnp.sum(manual(p, True)**2))(v['params'])
  np.testing.assert_allclose(g['bn']['scale'], g_ref['bn']['scale'],
                             rtol=1e-3, atol=1e-4)
  np.testing.assert_allclose(g['conv']['kernel'], g_ref['conv']['kernel'],
                             rtol=1e-3, atol=1e-4)


def test_paper_grid_variant_folds_and_others_do_not():
  assert quant.default_config('robustmq').bn_fold
  assert quant.parse_spec('w4a4', quant.default_config('robustmq')).bn_fold
  for variant in ('', 'imagenet', 'sample'):
    assert not quant.default_config(variant).bn_fold
