"""Quantized grouped and depthwise convolutions (RegNetX, MobileNetV2).

Layer level, as `test_quant_numerics` does for dense convs: a grouped conv
(4 groups of 2 channels) and a depthwise conv (one channel per group), on
signed and unsigned inputs, per-tensor and per-channel kernels. AQT's
integers equal the plain-jnp reference quantizer's exactly; fake-quant, the
integer path and AQT's served model equal the reference forward; input
gradients are straight-through (non-zero, equal to the reference's).
Model level: tiny RegNetX / MobileNetV2 twins quantized end to end (PTQ):
gradients non-zero and close to the reference's, serving == fake-quant.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustmq_jax import models
from robustmq_jax import quant
from robustmq_jax.data.sample import SampleDataset
from robustmq_jax.models import random_init
from robustmq_jax.models.ops import FLOAT_OPS
from robustmq_jax.models.ops import Ops
from robustmq_jax.models.ops import Role
from robustmq_jax.quant import aqt_backend
from robustmq_jax.quant import graph
from robustmq_jax.quant import pipeline
from robustmq_jax.quant import reference
from robustmq_jax.quant.plan import LayerQuant
from robustmq_jax.quant.plan import TensorQuant

_GROUPS = {'grouped': 4, 'depthwise': 8}
_ORDER = ('grouped', 'depthwise')


class GroupedLayers(nn.Module):
  """A grouped (8 -> 8, 4 groups) and a depthwise (8 channels) 3x3 conv."""
  ops: Ops = FLOAT_OPS

  @nn.compact
  def __call__(self, x):
    out = {}
    for name, strides in zip(_ORDER, (1, 2)):
      out[name] = nn.Conv(
          8, (3, 3), strides=strides, padding=((1, 1), (1, 1)),
          feature_group_count=_GROUPS[name], use_bias=False, name=name,
          conv_general_dilated_cls=self.ops.conv_general_dilated_cls(
              Role(name, 'conv')))(x[name])
    return out


def _inputs():
  rng = np.random.default_rng(0)
  return {'grouped': rng.normal(size=(2, 6, 6, 8)).astype(np.float32),
          'depthwise': np.maximum(rng.normal(size=(2, 6, 6, 8)), 0).astype(
              np.float32)}


@functools.cache
def _params():
  shapes = jax.eval_shape(GroupedLayers().init, jax.random.key(0), _inputs())
  rng = np.random.default_rng(1)
  return jax.tree.map(
      lambda s: (rng.normal(size=s.shape) * 0.3).astype(np.float32),
      shapes['params'])


def _setup(bits, per_channel):
  x, params = _inputs(), jax.tree.map(np.asarray, _params())
  plan, scales = {}, {}
  for name in _ORDER:
    w = params[name]['kernel']
    axes = (0, 1, 2) if per_channel else tuple(range(w.ndim))
    unsigned = name == 'depthwise'  # Its input is post-ReLU.
    plan[name] = LayerQuant(name, 'conv', TensorQuant(bits, unsigned),
                            TensorQuant(bits, False, axes), w.shape)
    scales[name] = {
        'lhs': np.asarray(reference.scale_from_bound(
            0.8 * np.abs(x[name]).max(), bits, unsigned)),
        'rhs': np.asarray(reference.scale_from_bound(
            0.8 * reference.absmax(w, axes), bits, False))}
  variables = {'params': params,
               'quant': pipeline.quant_collection(plan, scales)}
  return x, plan, scales, variables


def _model(plan, scales, mode):
  return GroupedLayers(aqt_backend.AqtOps(plan, mode, scales))


def _convert(plan, scales, variables, x):
  model = _model(plan, scales, 'convert')
  return jax.jit(lambda v, x: model.apply(v, x, mutable=['aqt'])[1])(
      variables, x)


def test_kernel_shapes_are_grouped():
  p = _params()
  assert p['grouped']['kernel'].shape == (3, 3, 2, 8)
  assert p['depthwise']['kernel'].shape == (3, 3, 1, 8)


@pytest.mark.parametrize('per_channel', [False, True])
@pytest.mark.parametrize('bits', [2, 4, 8])
def test_integers_forward_and_serving_equal_reference(bits, per_channel):
  x, plan, scales, variables = _setup(bits, per_channel)
  quantize = jax.jit(reference.quantize, static_argnums=(2, 3))
  # The operands AQT convolves are the reference integers.
  found = graph.contraction_operands(
      _model(plan, scales, 'int').apply, variables, x)
  assert [c.primitive for c in found] == ['conv_general_dilated'] * 2
  for name, c in zip(_ORDER, found):
    layer = plan[name]
    np.testing.assert_array_equal(
        c.lhs.astype(np.int32),
        quantize(x[name], scales[name]['lhs'], bits, layer.lhs.unsigned))
    np.testing.assert_array_equal(
        c.rhs.astype(np.int32),
        quantize(variables['params'][name]['kernel'], scales[name]['rhs'],
                 bits, False))
  # CONVERT freezes the reference integers of the grouped kernels.
  state = _convert(plan, scales, variables, x)
  for name in _ORDER:
    frozen = state['aqt'][name]['q']['aqt']['qrhs']['frozen']
    assert frozen.qvalue.dtype == jnp.int8
    np.testing.assert_array_equal(
        np.asarray(frozen.qvalue, np.int32),
        quantize(variables['params'][name]['kernel'], scales[name]['rhs'],
                 bits, False))
  # Forward: fake-quant, integer path and served model == the reference.
  ref = jax.jit(GroupedLayers(reference.ReferenceOps(plan)).apply)(
      variables, x)
  fake = jax.jit(_model(plan, scales, 'fake').apply)(variables, x)
  served = jax.jit(_model(plan, scales, 'serve').apply)(
      dict(variables, aqt=state['aqt']), x)
  for name in _ORDER:
    assert np.abs(ref[name]).max() > 0
    np.testing.assert_allclose(fake[name], ref[name], rtol=1e-5, atol=1e-6,
                               err_msg=name)
    np.testing.assert_allclose(served[name], fake[name], rtol=1e-5,
                               atol=1e-6, err_msg=name)


@pytest.mark.parametrize('mode', ['fake', 'serve'])
def test_input_gradients_are_straight_through(mode):
  x, plan, scales, variables = _setup(4, True)
  if mode == 'serve':
    variables = dict(variables,
                     aqt=_convert(plan, scales, variables, x)['aqt'])
  model = _model(plan, scales, mode)
  ref = GroupedLayers(reference.ReferenceOps(plan))
  rng = np.random.default_rng(2)
  cot = {k: rng.normal(size=(2, 6 if k == 'grouped' else 3,
                             6 if k == 'grouped' else 3, 8)).astype(
                                 np.float32) for k in _ORDER}

  def loss(m, x):
    out = m.apply(variables, x)
    return sum(jnp.sum(out[k] * cot[k]) for k in out)

  g = jax.jit(jax.grad(lambda x: loss(model, x)))(x)
  g_ref = jax.jit(jax.grad(lambda x: loss(ref, x)))(x)
  for k in _ORDER:
    assert np.mean(np.asarray(g[k]) != 0) > 0.5, k
    np.testing.assert_allclose(g[k], g_ref[k], rtol=1e-4, atol=1e-5,
                               err_msg=k)


# ------------------------------------------------------------ model level.

TINY = {
    'regnetx_cifar': {'depths': (1, 1), 'widths': (8, 16),
                      'group_width': 4, 'stem_width': 8,
                      'stage_strides': (1, 2)},
    'mobilenet_v2_cifar': {'settings': ((1, 8, 1, 1), (6, 8, 2, 2)),
                           'stem_width': 8, 'head_width': 16},
}


@functools.cache
def _data():
  images, labels = SampleDataset('train').arrays()
  return images[:64], labels[:64]


@pytest.mark.parametrize('name', sorted(TINY))
def test_quantized_twins_ste_gradients_and_serving(name, tmp_path):
  module = models.get_model(name, num_classes=10, **TINY[name])
  fv = random_init.he_normal_variables(module, 32)
  qc = quant.default_config().to_dict()
  qc.update(num_calib_batches=1, calib_batch_size=32)
  images, labels = _data()
  qm = quant.quantize_model(name, 10, TINY[name], fv,
                            quant.parse_spec('w4a4', qc), images, labels)
  groups = [p for p in qm.plan if 'conv2' in p or 'conv_dw' in p]
  assert groups and all(qm.plan[p].quantized for p in groups)
  x = images[:8].astype(np.float32) / 255.0
  y = labels[:8]
  ref_model = models.get_model(name, num_classes=10,
                               ops=reference.ReferenceOps(qm.plan),
                               **TINY[name])

  def loss_grad(apply):
    def loss(x):
      logits = apply(qm.variables, x)
      return -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(logits),
                                          y[:, None], axis=1)), logits
    g, logits = jax.jit(jax.grad(loss, has_aux=True))(x)
    return np.asarray(g), np.asarray(logits)

  g, logits = loss_grad(qm.apply_fn())
  g_ref, ref_logits = loss_grad(
      lambda v, x: ref_model.apply(v, x, train=False))
  assert np.all(np.abs(g).reshape(len(x), -1).sum(1) > 0)
  cos = np.sum(g * g_ref) / (np.linalg.norm(g) * np.linalg.norm(g_ref))
  assert cos >= 0.9, cos
  np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-4)
  serve_apply, serve_vars = qm.serve()
  np.testing.assert_allclose(jax.jit(serve_apply)(serve_vars, x), logits,
                             rtol=1e-4, atol=1e-4)
  # Grouped / depthwise kernels survive the quantized checkpoint format.
  quant.save(str(tmp_path), qm)
  again = quant.load(str(tmp_path))
  assert again.plan == qm.plan
  for path, a in jax.tree_util.tree_leaves_with_path(qm.variables):
    b = again.variables
    for k in path:
      b = b[k.key]
    np.testing.assert_array_equal(a, b, str(path))


# ~1.5-2.5 min each on the 2-core box under load (compiling the QAT step):
# outside the default run, like the other QAT-per-method tests.
@pytest.mark.slow
@pytest.mark.parametrize('method', ['dorefa', 'pact', 'lsq'])
@pytest.mark.parametrize('name', sorted(TINY))
def test_every_qat_method_trains_the_grouped_twins(name, method):
  """QAT through grouped / depthwise convolutions: the loss falls, every
  image has a non-zero input gradient, and serving equals fake-quant."""
  module = models.get_model(name, num_classes=10, **TINY[name])
  fv = random_init.he_normal_variables(module, 32)
  qc = quant.default_config().to_dict()
  qc.update(num_calib_batches=1, calib_batch_size=32, method=method,
            qat={'steps': 12, 'batch_size': 32, 'learning_rate': 3e-3,
                 'warmup_steps': 2, 'pad_crop': 0})
  images, labels = _data()
  qm = quant.quantize_model(name, 10, TINY[name], fv,
                            quant.parse_spec('w4a4', qc), images, labels)
  assert qm.meta['qat_loss_end'] < qm.meta['qat_loss_start'], qm.meta
  x, y = images[:8].astype(np.float32) / 255.0, labels[:8]
  apply = qm.apply_fn()

  def loss(x):
    logits = apply(qm.variables, x)
    return -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(logits),
                                        y[:, None], axis=1)), logits

  g, logits = jax.jit(jax.grad(loss, has_aux=True))(x)
  assert np.all(np.abs(np.asarray(g)).reshape(len(x), -1).sum(1) > 0)
  serve_apply, serve_vars = qm.serve()
  np.testing.assert_allclose(jax.jit(serve_apply)(serve_vars, x), logits,
                             rtol=1e-4, atol=1e-4)
