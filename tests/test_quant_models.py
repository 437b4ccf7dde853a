"""Quantized ResNet and ViT end to end: gradients, graphs, storage, build, QAT.

Tiny variants of the registered models (ResNet-20-style with two one-block
stages, a one-block ViT on 8x8 patches) keep compiles short; the embedded
digits sample is the data. References: `reference.ReferenceOps` (the
plain-jnp straight-through twin) and the float model itself.
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustmq_jax import models
from robustmq_jax import quant
from robustmq_jax.models import random_init
from robustmq_jax.data.sample import SampleDataset
from robustmq_jax.evaluation import make_mesh
from robustmq_jax.quant import graph
from robustmq_jax.quant import reference

TINY = {
    'resnet20_cifar': {'stage_sizes': (1, 1), 'widths': (4, 8)},
    'vit_tiny_patch4_32': {'depth': 1, 'hidden_size': 16, 'num_heads': 2,
                           'mlp_dim': 32, 'patch_size': 8},
}


@functools.cache
def _data():
  images, labels = SampleDataset('train').arrays()
  return images[:256], labels[:256]


@functools.cache
def _float_variables(name):
  """He-normal random variables, without compiling an initializer."""
  module = models.get_model(name, num_classes=10, **TINY[name])
  return random_init.he_normal_variables(module, 32)


def _spec(precision='w4a4', **kw):
  qc = quant.default_config().to_dict()
  qc.update(num_calib_batches=2, calib_batch_size=32, **kw)
  return quant.parse_spec(precision, qc)


@functools.cache
def _quantized(name, precision='w4a4', granularity='per_tensor'):
  images, labels = _data()
  return quant.quantize_model(name, 10, TINY[name], _float_variables(name),
                              _spec(precision, granularity=granularity),
                              images, labels)


def _loss_grad(apply, variables, x, y):
  """(input gradient of the summed cross-entropy, logits): one compile."""
  def loss(x):
    logits = apply(variables, x)
    return -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(logits),
                                        y[:, None], axis=1)), logits
  g, logits = jax.jit(jax.grad(loss, has_aux=True))(x)
  return np.asarray(g), np.asarray(logits)


@pytest.mark.parametrize('granularity', ['per_tensor', 'per_channel'])
@pytest.mark.parametrize('name', sorted(TINY))
def test_input_gradient_is_nonzero_and_straight_through(name, granularity):
  qm = _quantized(name, 'w4a4', granularity)
  images, labels = _data()
  x, y = images[:16].astype(np.float32) / 255.0, labels[:16]
  g, logits = _loss_grad(qm.apply_fn(), qm.variables, x, y)
  ref_model = models.get_model(name, num_classes=10,
                               ops=reference.ReferenceOps(qm.plan),
                               **TINY[name])
  ref_apply = lambda v, x: ref_model.apply(v, x, train=False)
  g_ref, ref_logits = _loss_grad(ref_apply, qm.variables, x, y)
  # AutoAttack's rule: no example may have an all-zero input gradient.
  assert np.all(np.abs(g).reshape(len(x), -1).sum(1) > 0)
  cos = np.sum(g * g_ref) / (np.linalg.norm(g) * np.linalg.norm(g_ref))
  assert cos >= 0.9, cos
  # Same forward as the reference quantizer.
  np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('name', sorted(TINY))
def test_quantized_graphs_hold_low_bit_values(name):
  qm = _quantized(name)
  x = _data()[0][:8].astype(np.float32) / 255.0
  # Fake-quant graph: every contraction operand lies on its grid.
  found = graph.contraction_operands(qm.apply_fn(), qm.variables, x)
  n_layers = sum(l.quantized for l in qm.plan.values())
  assert len(found) == n_layers
  for i, c in enumerate(found):
    bits = 8 if i in (0, len(found) - 1) else 4  # First / last at 8 bits.
    assert len(np.unique(c.lhs)) <= 2**bits, (i, c.primitive)
    assert len(np.unique(c.rhs)) <= 2**bits, (i, c.primitive)
  # Served graph: integer matmuls wherever AQT does them.
  serve_apply, serve_vars = qm.serve()
  served = graph.contractions(serve_apply, serve_vars, x)
  dots = [c for c in served if c.primitive == 'dot_general']
  assert dots
  for c in dots:
    assert c.lhs_dtype in (np.int8, np.uint8) and c.rhs_dtype in (
        np.int8, np.uint8), c
    assert c.out_dtype == np.int32
  np.testing.assert_allclose(jax.jit(serve_apply)(serve_vars, x),
                             jax.jit(qm.apply_fn())(qm.variables, x),
                             rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('name', sorted(TINY))
def test_traced_grids_give_the_same_numbers_and_one_program(name):
  """Bit widths as variables ('quant_grid'): what `quant.build` evaluates.

  The forward, its input gradient and the served model equal the plan's
  constant grids exactly, and w4a4 and w2a2 lower to the same program
  (which the constant grids do not: the test can tell them apart).
  """
  images, labels = _data()
  x, y = images[:8].astype(np.float32) / 255.0, labels[:8]
  programs = {}
  convert = None
  for precision in ('w4a4', 'w2a2'):
    qm = _quantized(name, precision)
    traced, variables = qm.apply_fn(traced_grid=True), qm.grid_variables()
    assert quant.GRID_COLLECTION in variables
    g, logits = _loss_grad(traced, variables, x, y)
    g_const, logits_const = _loss_grad(qm.apply_fn(), qm.variables, x, y)
    np.testing.assert_array_equal(logits, logits_const)
    np.testing.assert_array_equal(g, g_const)
    serve_apply, serve_vars = qm.serve()
    np.testing.assert_allclose(jax.jit(serve_apply)(serve_vars, x),
                               logits_const, rtol=1e-4, atol=1e-4)
    # w2a2 converted by w4a4's CONVERT function: the same integers.
    convert = convert or qm.convert_fn()
    _, shared_vars = qm.serve(convert)
    jax.tree.map(np.testing.assert_array_equal, shared_vars, serve_vars)
    programs[precision] = [
        jax.jit(apply).lower(v, x).as_text() for apply, v in
        ((traced, variables), (qm.apply_fn(), qm.variables))]
  assert programs['w4a4'][0] == programs['w2a2'][0]
  assert convert._cache_size() == 1  # Traced once for both bit widths.
  assert programs['w4a4'][1] != programs['w2a2'][1]
  # What the runner does: one function object serves both precisions.
  q4, q2 = _quantized(name, 'w4a4'), _quantized(name, 'w2a2')
  assert q4.program_key() == q2.program_key()
  shared = jax.jit(q4.apply_fn(traced_grid=True))
  np.testing.assert_array_equal(shared(q4.grid_variables(), x),
                                jax.jit(q4.apply_fn())(q4.variables, x))
  np.testing.assert_array_equal(shared(q2.grid_variables(), x),
                                jax.jit(q2.apply_fn())(q2.variables, x))
  assert shared._cache_size() == 1  # pylint: disable=protected-access


def test_fp32_spec_is_an_exact_identity():
  name = 'resnet20_cifar'
  fv = _float_variables(name)
  qm = quant.quantize_model(name, 10, TINY[name], fv, quant.parse_spec(
      'fp32', quant.default_config()))
  assert qm.plan == {}
  x = _data()[0][:8].astype(np.float32) / 255.0
  module = models.get_model(name, num_classes=10, **TINY[name])
  want = jax.jit(lambda v, x: module.apply(v, x, train=False))(fv, x)
  got = jax.jit(qm.apply_fn())(qm.variables, x)
  np.testing.assert_array_equal(got, want)


def test_save_load_round_trips_bit_exactly(tmp_path):
  qm = _quantized('vit_tiny_patch4_32', 'w4a4', 'per_channel')
  quant.save(str(tmp_path), qm, meta={'note': 'test'})
  again = quant.load(str(tmp_path))
  assert again.plan == qm.plan
  assert again.spec.fingerprint() == qm.spec.fingerprint()
  assert again.meta['note'] == 'test'
  flat_a = jax.tree_util.tree_leaves_with_path(qm.variables)
  flat_b = dict(jax.tree_util.tree_leaves_with_path(again.variables))
  assert len(flat_a) == len(flat_b)
  for path, a in flat_a:
    b = flat_b[path]
    assert a.dtype == b.dtype and a.shape == b.shape, path
    np.testing.assert_array_equal(a, b, str(path))
  # Compact: 4-bit kernels take half a byte per weight.
  float_bytes = sum(a.nbytes for a in jax.tree.leaves(qm.variables['params']))
  assert os.path.getsize(tmp_path / 'tensors.safetensors') < float_bytes


def _request(tmp_path, qconfig, name='resnet20_cifar', precision='w4a4',
             train_arrays=None):
  return quant.QuantRequest(
      model_name=name, model_kwargs=TINY[name], num_classes=10,
      float_variables=_float_variables(name), precision=precision,
      qconfig=qconfig, train_arrays=train_arrays or _data,
      cache_dir=str(tmp_path / 'cache'), mesh=make_mesh(), seed=0)


def test_build_fields_cache_and_shipped_checkpoints(tmp_path):
  qc = quant.default_config().to_dict()
  qc.update(num_calib_batches=1, calib_batch_size=32, eval_int8=False)
  fields = quant.build(_request(tmp_path, qc))
  assert set(fields) == {'apply', 'variables', 'grad_apply', 'serve_apply',
                         'serve_variables', 'method'}
  assert fields['method'] == 'ptq' and fields['serve_apply'] is None

  def no_data():
    raise AssertionError('should have loaded a checkpoint')

  # Second build: from the cache, no calibration data needed.
  programs = {}
  req = _request(tmp_path, qc, train_arrays=no_data)
  req.programs = programs
  again = quant.build(req)
  for a, b in zip(jax.tree.leaves(fields['variables']),
                  jax.tree.leaves(again['variables'])):
    np.testing.assert_array_equal(a, b)
  # Another bit width in the same run gets the same function (the runner
  # keeps its compiled programs); its own grids come with its variables.
  req = _request(tmp_path, qc, precision='w2a2')
  req.programs = programs
  w2 = quant.build(req)
  assert w2['apply'] is again['apply'] and len(programs) == 2
  assert w2['grad_apply'] is again['grad_apply']
  assert not np.array_equal(
      jax.tree.leaves(w2['variables'][quant.GRID_COLLECTION]),
      jax.tree.leaves(again['variables'][quant.GRID_COLLECTION]))
  # A shipped checkpoint (<dir>/<model>/<precision>_<method>) is used first.
  shipped = tmp_path / 'shipped'
  qm = quant.load(str(next((tmp_path / 'cache' / 'resnet20_cifar').iterdir())))
  quant.save(str(shipped / 'resnet20_cifar' / 'w4a4_ptq'), qm,
             meta={'float_digest': qm.meta['float_digest'], 'mark': 1})
  qc['checkpoint_dir'] = str(shipped)
  req = _request(tmp_path, qc, train_arrays=no_data)
  req.cache_dir = str(tmp_path / 'empty')
  quant.build(req)
  # A different float model invalidates it.
  req.float_variables = jax.tree.map(lambda a: a + 1, req.float_variables)
  with pytest.raises(AssertionError, match='should have loaded'):
    quant.build(req)


def test_qat_lowers_the_training_loss():
  name = 'resnet20_cifar'
  images, labels = _data()
  spec = _spec('w4a4', method='lsq', qat={
      'steps': 25, 'batch_size': 32, 'learning_rate': 3e-3,
      'warmup_steps': 3, 'pad_crop': 0})
  qm = quant.quantize_model(name, 10, TINY[name], _float_variables(name),
                            spec, images, labels)
  assert qm.meta['qat_loss_end'] < qm.meta['qat_loss_start'] - 0.1, qm.meta
  # The exported model is on the reference grid: AQT == reference forward.
  x = images[:8].astype(np.float32) / 255.0
  ref_model = models.get_model(name, num_classes=10,
                               ops=reference.ReferenceOps(qm.plan),
                               **TINY[name])
  aqt_apply = qm.apply_fn()
  got, want = jax.jit(lambda v, x: (aqt_apply(v, x), ref_model.apply(v, x)))(
      qm.variables, x)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize('method', ['dorefa', 'pact', 'lsq'])
@pytest.mark.parametrize('name', sorted(TINY))
def test_every_qat_method_trains_both_models(name, method):
  images, labels = _data()
  spec = _spec('w4a4', method=method, qat={
      'steps': 40, 'batch_size': 32, 'learning_rate': 3e-3,
      'warmup_steps': 4, 'pad_crop': 0})
  qm = quant.quantize_model(name, 10, TINY[name], _float_variables(name),
                            spec, images, labels)
  assert qm.meta['qat_loss_end'] < qm.meta['qat_loss_start'], qm.meta
  x = images[:8].astype(np.float32) / 255.0
  g, _ = _loss_grad(qm.apply_fn(), qm.variables, x, labels[:8])
  assert np.all(np.abs(g).reshape(8, -1).sum(1) > 0)


def test_calibration_rules_on_the_stem_input():
  """The stem's input is the normalised image: bounds in closed form."""
  from robustmq_jax.models.normalize import normalize  # pylint: disable=g-import-not-at-top
  from robustmq_jax.quant import calibration  # pylint: disable=g-import-not-at-top
  name = 'resnet20_cifar'
  images, _ = _data()
  fv = _float_variables(name)
  mfn = lambda ops: models.get_model(name, num_classes=10, ops=ops,
                                     **TINY[name])
  module = mfn(models.FLOAT_OPS)
  xs = [np.abs(np.asarray(normalize(b, module.mean, module.std)))
        for b in calibration.calibration_batches(images, _spec(), seed=0)]
  bounds = {}
  for rule in ('minmax', 'percentile', 'mse'):
    cal = calibration.calibrate(mfn, fv, images, _spec(calibration=rule))
    bounds[rule] = cal.act_bounds[('conv1', 'lhs')]
    assert not cal.plan['conv1'].lhs.unsigned  # Normalised: signed.
    assert cal.plan['layer1_0/conv1'].lhs.unsigned  # After ReLU.
    assert cal.plan['conv1'].lhs.bits == 8  # First layer: 8 bits.
  np.testing.assert_allclose(bounds['minmax'], max(x.max() for x in xs),
                             rtol=1e-6)
  k = int(np.ceil(xs[0].size * (1 - 99.99 / 100)))
  want = np.mean([np.sort(x.reshape(-1))[-k] for x in xs])
  np.testing.assert_allclose(bounds['percentile'], want, rtol=1e-6)
  assert 0 < bounds['mse'] <= bounds['minmax']
