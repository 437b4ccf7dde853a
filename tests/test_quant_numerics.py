"""AQT layers against the plain-jnp reference quantizer, layer by layer.

Every layer type (Conv, Dense/DenseGeneral, attention einsums QK^T and PV),
signed and unsigned inputs, per-tensor and per-channel kernels, at 2, 4 and
8 bits: AQT's integers and scales equal `reference.quantize`'s exactly.
Reference: `robustmq_jax.quant.reference` (tolerance 0 for integers and
scales; 1e-5 relative for float outputs, which differ only in the order of
float operations).
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustmq_jax.models.ops import FLOAT_OPS
from robustmq_jax.models.ops import Ops
from robustmq_jax.models.ops import Role
from robustmq_jax.quant import aqt_backend
from robustmq_jax.quant import graph
from robustmq_jax.quant import pipeline
from robustmq_jax.quant import plan as plan_lib
from robustmq_jax.quant import reference
from robustmq_jax.quant.plan import LayerQuant
from robustmq_jax.quant.plan import TensorQuant


class Layers(nn.Module):
  """One branch per layer variant, each on its own known input."""
  ops: Ops = FLOAT_OPS

  @nn.compact
  def __call__(self, x):
    ops = self.ops

    def conv(name, inp, strides):
      return nn.Conv(4, (3, 3), strides=strides, padding=((1, 1), (1, 1)),
                     use_bias=False, name=name,
                     conv_general_dilated_cls=ops.conv_general_dilated_cls(
                         Role(name, 'conv')))(inp)

    def dense(name, inp, features, axis=-1):
      return nn.DenseGeneral(features, axis=axis, name=name,
                             dot_general_cls=ops.dot_general_cls(
                                 Role(name, 'dense')))(inp)

    return {
        'conv_s': conv('conv_s', x['img'], 1),
        'conv_u': conv('conv_u', x['img_relu'], 2),
        'dense_s': dense('dense_s', x['tok'], (2, 3)),
        'dense_u': dense('dense_u', x['tok_relu'], 5),
        'qk': ops.einsum(Role('qk', 'einsum'))('bqhd,bkhd->bhqk', x['q'],
                                               x['k']),
        'pv': ops.einsum(Role('pv', 'einsum'))('bhqk,bkhd->bqhd', x['p'],
                                               x['k']),
    }


# Program order of the contractions in `Layers`.
ORDER = ('conv_s', 'conv_u', 'dense_s', 'dense_u', 'qk', 'pv')
KERNEL_SHAPES = {'conv_s': (3, 3, 3, 4), 'conv_u': (3, 3, 3, 4),
                 'dense_s': (6, 2, 3), 'dense_u': (6, 5)}
CONTRACTING = {'conv_s': (0, 1, 2), 'conv_u': (0, 1, 2), 'dense_s': (0,),
               'dense_u': (0,)}
PER_CHANNEL = ('conv_u', 'dense_s')


def _inputs():
  rng = np.random.default_rng(0)
  n = lambda *s: rng.normal(size=s).astype(np.float32)
  logits = n(2, 2, 4, 4) * 3
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  return {'img': n(2, 6, 6, 3), 'img_relu': np.maximum(n(2, 6, 6, 3), 0),
          'tok': n(2, 4, 6), 'tok_relu': np.maximum(n(2, 4, 6), 0),
          'q': n(2, 4, 2, 3), 'k': n(2, 4, 2, 3), 'p': p.astype(np.float32)}


@functools.cache
def _init_params():
  """Random params without compiling an initializer (slow on 2 cores)."""
  shapes = jax.eval_shape(Layers().init, jax.random.key(0), _inputs())
  rng = np.random.default_rng(1)
  return jax.tree.map(
      lambda s: (rng.normal(size=s.shape) * 0.3).astype(np.float32),
      shapes['params'])


def _init(x):
  del x
  return _init_params()


def _setup(bits):
  """Plan, variables and the quantized operands' float inputs."""
  x = _inputs()
  params = _init(x)
  params = jax.tree.map(np.asarray, params)
  act = lambda unsigned: TensorQuant(bits, unsigned)
  layer_inputs = {'conv_s': ('img', None), 'conv_u': ('img_relu', None),
                  'dense_s': ('tok', None), 'dense_u': ('tok_relu', None),
                  'qk': ('q', 'k'), 'pv': ('p', 'k')}
  plan, scales = {}, {}
  for name in ORDER:
    a, b = layer_inputs[name]
    lhs = act(name.endswith('_u') or name == 'pv')
    if b is None:  # Kernel.
      w = params[name]['kernel']
      axes = (CONTRACTING[name] if name in PER_CHANNEL else
              tuple(range(w.ndim)))
      rhs = TensorQuant(bits, False, axes)
      # Clip some values: bounds at 80% of max |x|.
      rhs_scale = reference.scale_from_bound(
          0.8 * reference.absmax(w, axes), bits, False)
      plan[name] = LayerQuant(name, 'dense' if 'dense' in name else 'conv',
                              lhs, rhs, w.shape)
    else:
      rhs = act(False)
      rhs_scale = reference.scale_from_bound(0.8 * np.abs(x[b]).max(), bits,
                                             False)
      plan[name] = LayerQuant(name, 'einsum', lhs, rhs)
    lhs_scale = reference.scale_from_bound(0.8 * np.abs(x[a]).max(), bits,
                                           lhs.unsigned)
    scales[name] = {'lhs': np.asarray(lhs_scale),
                    'rhs': np.asarray(rhs_scale)}
  variables = {'params': params,
               'quant': pipeline.quant_collection(plan, scales)}
  return x, plan, scales, variables, layer_inputs


_quantize = jax.jit(reference.quantize, static_argnums=(2, 3))


def _model(plan, scales, mode):
  ops = aqt_backend.AqtOps(plan, mode, scales)
  return Layers(ops)


@pytest.mark.parametrize('bits', [2, 4, 8])
def test_aqt_integers_and_scales_equal_reference(bits):
  x, plan, scales, variables, layer_inputs = _setup(bits)

  # Real integer path: the operands AQT feeds its contractions.
  int_model = _model(plan, scales, 'int')
  found = graph.contraction_operands(
      lambda v, x: int_model.apply(v, x), variables, x)
  assert [c.primitive for c in found] == ['conv_general_dilated'] * 2 + [
      'dot_general'] * 4
  for name, c in zip(ORDER, found):
    layer = plan[name]
    a, b = layer_inputs[name]
    want_lhs = _quantize(x[a], scales[name]['lhs'], bits,
                                  layer.lhs.unsigned)
    rhs_in = x[b] if b else variables['params'][name]['kernel']
    want_rhs = _quantize(rhs_in, scales[name]['rhs'], bits,
                                  layer.rhs.unsigned)
    lhs_dt = np.uint8 if layer.lhs.unsigned else np.int8
    rhs_dt = np.uint8 if layer.rhs.unsigned else np.int8
    if c.lhs.shape != want_lhs.shape:  # einsum handed (rhs, lhs) to AQT.
      want_lhs, want_rhs, lhs_dt, rhs_dt = want_rhs, want_lhs, rhs_dt, lhs_dt
    if c.primitive == 'dot_general':  # Real int8/uint8 operands.
      assert (c.lhs_dtype, c.rhs_dtype) == (lhs_dt, rhs_dt), name
      assert c.out_dtype == jnp.int32
    else:  # AQT convolves integer-valued floats.
      assert c.lhs_dtype == np.float32
    np.testing.assert_array_equal(c.lhs.astype(np.int32), want_lhs, name)
    np.testing.assert_array_equal(c.rhs.astype(np.int32), want_rhs, name)
    assert len(np.unique(c.lhs)) <= 2**bits and len(np.unique(c.rhs)) <= (
        2**bits)

  # AQT CONVERT: the frozen kernels and their scales.
  state = _convert(plan, scales, variables, x)
  for name in ('conv_s', 'conv_u', 'dense_s', 'dense_u'):
    frozen = state['aqt'][name]['q']['aqt']['qrhs']
    w = variables['params'][name]['kernel']
    want = _quantize(w, scales[name]['rhs'], bits)
    if 'frozen' in frozen:  # Conv: a QTensor.
      qvalue, scale = frozen['frozen'].qvalue, frozen['frozen'].scale[0]
    else:  # Dense (legacy freezer): value + output-transposed scale.
      qvalue, scale = frozen['value'], frozen['scale']
    assert qvalue.dtype == jnp.int8
    np.testing.assert_array_equal(np.asarray(qvalue, np.int32), want)
    got, want_s = np.asarray(scale), np.asarray(scales[name]['rhs'])
    if want_s.size == 1:  # Per-tensor, stored broadcast per channel.
      want_s = np.broadcast_to(want_s.reshape(-1), got.shape)
    np.testing.assert_array_equal(got.reshape(-1), want_s.reshape(-1))


def _convert(plan, scales, variables, x):
  model = _model(plan, scales, 'convert')
  return jax.jit(lambda v, x: model.apply(v, x, mutable=['aqt'])[1])(
      variables, x)


def _ref_outputs(plan, variables, x):
  return jax.jit(Layers(reference.ReferenceOps(plan)).apply)(variables, x)


@pytest.mark.parametrize('bits', [2, 8])
def test_fake_int_and_served_forward_match_reference(bits):
  x, plan, scales, variables, _ = _setup(bits)
  ref = _ref_outputs(plan, variables, x)
  fake = jax.jit(_model(plan, scales, 'fake').apply)(variables, x)
  ints = jax.jit(_model(plan, scales, 'int').apply)(variables, x)
  for name in ORDER:
    np.testing.assert_allclose(fake[name], ref[name], rtol=1e-5, atol=1e-6,
                               err_msg=name)
    np.testing.assert_allclose(ints[name], ref[name], rtol=1e-5, atol=1e-6,
                               err_msg=name)
  state = _convert(plan, scales, variables, x)
  served = jax.jit(_model(plan, scales, 'serve').apply)(
      dict(variables, aqt=state['aqt']), x)
  for name in ORDER:  # Same integers; the rescale may round 1 ulp apart.
    np.testing.assert_allclose(served[name], ints[name], rtol=3e-7, atol=0,
                               err_msg=name)


@pytest.mark.parametrize('mode', ['fake', 'serve'])
def test_input_gradients_are_straight_through(mode):
  """Every layer (conv included: google/aqt#285) passes the STE gradient."""
  bits = 4
  x, plan, scales, variables, _ = _setup(bits)
  if mode == 'serve':
    state = _convert(plan, scales, variables, x)
    variables = dict(variables, aqt=state['aqt'])
  model = _model(plan, scales, mode)
  ref = Layers(reference.ReferenceOps(plan))
  rng = np.random.default_rng(1)
  cot = jax.tree.map(lambda o: rng.normal(size=o.shape).astype(np.float32),
                     jax.eval_shape(ref.apply, variables, x))

  def loss(m, x):
    out = m.apply(variables, x)
    return sum(jnp.sum(out[k] * cot[k]) for k in out)

  g = jax.jit(jax.grad(lambda x: loss(model, x)))(x)
  g_ref = jax.jit(jax.grad(lambda x: loss(ref, x)))(x)
  for k in x:
    assert np.any(np.asarray(g[k]) != 0), k
    np.testing.assert_allclose(g[k], g_ref[k], rtol=1e-4, atol=1e-5,
                               err_msg=k)


def test_plan_round_trips_through_json():
  _, plan, _, _, _ = _setup(4)
  again = plan_lib.plan_from_json(plan_lib.plan_to_json(plan))
  assert again == plan
  assert dataclasses.asdict(again['conv_u'].rhs)['shared_axes'] == (0, 1, 2)
