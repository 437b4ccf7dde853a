"""xla_cpu: convolutions re-emitted for XLA:CPU's fast kernels.

The rewrite must compute the same convolution (reference: the same
`lax.conv_general_dilated` call without the rewrite, float32, tolerance 1e-5
relative, only the summation order may differ; 1e-12 in float64, where
rounding cannot hide a wrong index) and must leave no non-canonical
convolution in the attack step loop, and no grouped convolution anywhere,
where XLA:CPU would run it with its slow emitted loop.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustmq_jax import attacks
from robustmq_jax import models
from robustmq_jax.attacks import losses
from robustmq_jax.evaluation import Evaluator
from robustmq_jax.evaluation import mesh as mesh_lib
from robustmq_jax.testing import digits_cnn as helpers
from robustmq_jax.xla_cpu import conv_layout
from robustmq_jax.xla_cpu import grouped_conv

# (lhs shape, rhs shape, dimension numbers, extra conv arguments).
CASES = {
    'nchw_oihw': ((2, 4, 9, 8), (6, 4, 3, 3), ('NCHW', 'OIHW', 'NCHW'), {}),
    'transposed_kernel_hwoi': ((2, 9, 8, 4), (3, 3, 6, 4),
                               ('NHWC', 'HWOI', 'NHWC'),
                               dict(lhs_dilation=(2, 2),
                                    padding=((1, 2), (1, 2)))),
    'grouped_strided': ((2, 9, 8, 4), (6, 3, 2, 2), ('NHWC', 'OHWI', 'NCHW'),
                        dict(window_strides=(2, 1), feature_group_count=2)),
    'conv1d': ((3, 7, 5), (4, 5, 3), ('NWC', 'OIW', 'NCW'), {}),
    'conv3d': ((1, 2, 5, 6, 4), (2, 2, 2, 2, 3), ('NCDHW', 'IDHWO', 'NDHWC'),
               dict(rhs_dilation=(1, 2, 1))),
}


def _conv(lhs, rhs, dn, extra):
  n = lhs.ndim - 2
  kw = dict(window_strides=(1,) * n, padding=((1, 1),) * n)
  kw.update(extra)
  return jax.lax.conv_general_dilated(lhs, rhs, dimension_numbers=dn, **kw)


def _convs(jaxpr):
  """Dimension numbers of every convolution, nested jaxprs included."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == conv_layout.CONV:
      found.append(eqn.params['dimension_numbers'])
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      found.extend(_convs(sub))
  return found


@pytest.mark.parametrize('name', sorted(CASES))
def test_same_convolution_in_canonical_layout(name):
  lhs_shape, rhs_shape, dn, extra = CASES[name]
  rng = np.random.default_rng(0)
  lhs = jnp.asarray(rng.normal(size=lhs_shape), jnp.float32)
  rhs = jnp.asarray(rng.normal(size=rhs_shape), jnp.float32)
  fn = lambda a, b: _conv(a, b, dn, extra)
  # Nested in a jit, which the rewrite inlines.
  rewritten = conv_layout.canonical_convs(jax.jit(fn))
  want = fn(lhs, rhs)
  got = jax.jit(rewritten)(lhs, rhs)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5,
                             atol=1e-5 * float(jnp.abs(want).max()))
  before = _convs(jax.make_jaxpr(fn)(lhs, rhs).jaxpr)
  after = _convs(jax.make_jaxpr(rewritten)(lhs, rhs).jaxpr)
  assert not any(map(conv_layout.is_canonical, before))
  if extra.get('feature_group_count', 1) > 1:
    assert not after  # per-tap products instead (grouped_conv)
  else:
    assert len(after) == 1 and conv_layout.is_canonical(after[0])


def test_pytrees_and_functions_without_convolutions_pass_through():
  fn = lambda d: {'sum': d['a'] + d['b'], 'neg': -d['a']}
  d = {'a': jnp.arange(3.0), 'b': jnp.ones(3)}
  out = conv_layout.canonical_convs(fn)(d)
  assert set(out) == {'sum', 'neg'}
  np.testing.assert_array_equal(out['sum'], d['a'] + 1)


@pytest.mark.parametrize('cpu', [True, False])
def test_evaluator_rewrites_only_grouped_conv_models_on_cpu(monkeypatch, cpu):
  """The runner and the QAT job both pick the rewrite through set_model."""
  monkeypatch.setattr(conv_layout, 'wanted', lambda: cpu)
  evaluator = Evaluator(mesh_lib.make_mesh())
  for name, grouped in (('mobilenet_v2_cifar', True), ('regnetx_cifar', True),
                        ('resnet20_cifar', False)):
    evaluator.set_model(models.model_info(name))
    assert evaluator.rewrite_convs is (grouped and cpu), name


def test_attack_step_loop_holds_only_canonical_convolutions(monkeypatch):
  """JAX's input gradient of a conv is non-canonical: rewritten on CPU."""
  f = helpers.logits_fn()
  _, _, x, y = helpers.digits()
  x, y = jnp.asarray(x[:4]), jnp.asarray(y[:4])
  # A new function per setting: JAX caches traces by function.
  pgd = lambda: lambda z, steps: attacks.pgd(
      jax.random.key(0), f, z, y, eps=0.1, step_size=0.03, steps=steps)
  monkeypatch.setattr(conv_layout, 'wanted', lambda: True)
  convs = _convs(jax.make_jaxpr(pgd())(x, jnp.int32(3)).jaxpr)
  assert convs and all(map(conv_layout.is_canonical, convs))
  adv = jax.jit(pgd())(x, jnp.int32(3))
  monkeypatch.setattr(conv_layout, 'wanted', lambda: False)
  plain = _convs(jax.make_jaxpr(pgd())(x, jnp.int32(3)).jaxpr)
  assert not all(map(conv_layout.is_canonical, plain))
  # Same iterates: only the summation order of the convolutions differs.
  np.testing.assert_allclose(adv, jax.jit(pgd())(x, jnp.int32(3)), atol=1e-6)


def test_gradient_matches_plain_autodiff(monkeypatch):
  f = helpers.logits_fn()
  _, _, x, y = helpers.digits()
  x, y = jnp.asarray(x[:8]), jnp.asarray(y[:8])
  grad = lambda: lambda z: losses.loss_and_grad(
      f, lambda lg: losses.cross_entropy(lg, y), z)
  monkeypatch.setattr(conv_layout, 'wanted', lambda: True)
  got = jax.jit(grad())(x)
  monkeypatch.setattr(conv_layout, 'wanted', lambda: False)
  want = jax.jit(grad())(x)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# Grouped convolutions (canonical layout, kernel [kh, kw, in/groups, out]):
# (lhs shape, rhs shape, feature groups, strides, padding, lhs / rhs dilation).
GROUPED = {
    'depthwise': ((2, 9, 8, 12), (3, 3, 1, 12), 12, (1, 1), ((1, 1),) * 2,
                  None, None),
    'depthwise_strided': ((2, 9, 8, 12), (3, 3, 1, 12), 12, (2, 2),
                          ((1, 1),) * 2, None, None),
    'depthwise_multiplier_dilated': ((2, 9, 8, 6), (3, 3, 1, 12), 6, (2, 1),
                                     ((1, 1), (0, 1)), None, (1, 2)),
    'grouped': ((2, 9, 8, 12), (3, 3, 4, 12), 3, (1, 1), ((1, 1),) * 2,
                None, None),
    'grouped_strided_lhs_dilated': ((2, 5, 6, 16), (3, 3, 4, 8), 4, (2, 2),
                                    ((1, 2), (2, 1)), (2, 1), None),
    'grouped_1x1': ((3, 7, 7, 8), (1, 1, 4, 8), 2, (1, 1), ((0, 0),) * 2,
                    None, None),
}


def _grouped(lhs, rhs, groups, strides, padding, lhs_dil, rhs_dil):
  return jax.lax.conv_general_dilated(
      lhs, rhs, strides, padding, lhs_dilation=lhs_dil, rhs_dilation=rhs_dil,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=groups)


@pytest.fixture
def float64():
  jax.config.update('jax_enable_x64', True)
  yield jnp.float64
  jax.config.update('jax_enable_x64', False)


@pytest.mark.parametrize('name', sorted(GROUPED))
def test_grouped_conv_and_its_gradients_without_a_conv_op(name, float64):
  """Forward, input and kernel gradient (feature and batch groups)."""
  lhs_shape, rhs_shape, *args = GROUPED[name]
  rng = np.random.default_rng(1)
  lhs = jnp.asarray(rng.normal(size=lhs_shape), float64)
  rhs = jnp.asarray(rng.normal(size=rhs_shape), float64)
  loss = lambda a, b: jnp.sum(jnp.sin(_grouped(a, b, *args)))
  vg = jax.value_and_grad(loss, argnums=(0, 1))
  want = vg(lhs, rhs)
  got = jax.jit(conv_layout.canonical_convs(vg))(lhs, rhs)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-12,
                               atol=1e-12 * float(jnp.abs(w).max()))
  params = [e.params for e in _all_convs(jax.make_jaxpr(vg)(lhs, rhs).jaxpr)]
  # The plain program holds both kinds of grouped convolutions...
  assert any(p['feature_group_count'] > 1 for p in params)
  assert any(p['batch_group_count'] > 1 for p in params)
  # ... the rewritten one none.
  assert not _all_convs(jax.make_jaxpr(
      conv_layout.canonical_convs(vg))(lhs, rhs).jaxpr)


def _all_convs(jaxpr):
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == conv_layout.CONV:
      found.append(eqn)
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      found.extend(_all_convs(sub))
  return found


@pytest.mark.parametrize('case', ['conv1d', 'conv3d_negative_padding'])
def test_grouped_conv_in_one_and_three_dimensions(case, float64):
  rng = np.random.default_rng(2)
  if case == 'conv1d':
    lhs, rhs = rng.normal(size=(2, 9, 6)), rng.normal(size=(3, 2, 6))
    kw = dict(window_strides=(2,), padding=((1, 2),),
              dimension_numbers=('NWC', 'WIO', 'NWC'), feature_group_count=3)
  else:
    lhs, rhs = rng.normal(size=(1, 5, 6, 7, 4)), rng.normal(size=(2, 3, 2,
                                                                   2, 4))
    kw = dict(window_strides=(1, 2, 1), padding=((-1, 1), (1, 0), (0, -1)),
              rhs_dilation=(2, 1, 1),
              dimension_numbers=('NDHWC', 'DHWIO', 'NDHWC'),
              feature_group_count=2)
  lhs, rhs = jnp.asarray(lhs, float64), jnp.asarray(rhs, float64)
  loss = lambda a, b: jnp.sum(jnp.cos(jax.lax.conv_general_dilated(a, b,
                                                                   **kw)))
  vg = jax.value_and_grad(loss, argnums=(0, 1))
  got = conv_layout.canonical_convs(vg)(lhs, rhs)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(vg(lhs, rhs))):
    np.testing.assert_allclose(g, w, rtol=1e-12,
                               atol=1e-12 * float(jnp.abs(w).max()))
  assert not _all_convs(jax.make_jaxpr(
      conv_layout.canonical_convs(vg))(lhs, rhs).jaxpr)


@pytest.mark.parametrize('case', ['bfloat16', 'empty_output'])
def test_grouped_convs_it_cannot_take_stay_the_op(case):
  """Low precision (summed per tap in its own type) and empty outputs."""
  dtype = jnp.bfloat16 if case == 'bfloat16' else jnp.float32
  size = 8 if case == 'bfloat16' else 2  # 2x2 input, 3x3 kernel, no pad
  lhs = jnp.ones((1, size, size, 4), dtype)
  rhs = jnp.ones((3, 3, 1, 4), dtype)
  fn = lambda a, b: _grouped(a, b, 4, (1, 1), ((0, 0),) * 2, None, None)
  rewritten = conv_layout.canonical_convs(fn)
  assert len(_all_convs(jax.make_jaxpr(rewritten)(lhs, rhs).jaxpr)) == 1
  np.testing.assert_array_equal(rewritten(lhs, rhs), fn(lhs, rhs))


def test_grouped_conv_with_too_many_terms_stays_one_convolution():
  lhs = jnp.ones((1, 20, 20, 4))
  rhs = jnp.ones((9, 9, 1, 4))  # 81 taps > MAX_TERMS
  assert 81 > grouped_conv.MAX_TERMS
  fn = lambda a, b: _grouped(a, b, 4, (1, 1), ((4, 4),) * 2, None, None)
  convs = _all_convs(jax.make_jaxpr(conv_layout.canonical_convs(fn))(
      lhs, rhs).jaxpr)
  assert len(convs) == 1
  np.testing.assert_allclose(conv_layout.canonical_convs(fn)(lhs, rhs),
                             fn(lhs, rhs))


# Every block kind of the twins (strided and not, expansion 1 and 6, with
# and without a residual), at a fraction of their compile time.
SMALL_TWINS = {
    'regnetx_cifar': {'depths': (1, 2), 'widths': (8, 16), 'group_width': 4,
                      'stem_width': 8, 'stage_strides': (1, 2)},
    'mobilenet_v2_cifar': {'settings': ((1, 8, 1, 1), (6, 8, 2, 2),
                                        (6, 16, 2, 1)),
                           'stem_width': 8, 'head_width': 16},
}


@pytest.mark.parametrize('model', sorted(SMALL_TWINS))
def test_efficient_twins_train_and_attack_gradients_unchanged(model,
                                                              float64):
  """The whole loss gradient (input and parameters) of the grouped twins."""
  m = models.get_model(model, num_classes=10, **SMALL_TWINS[model])
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 16, 16, 3)),
                  float64)
  v = jax.tree.map(lambda a: a.astype(float64),
                   m.init(jax.random.key(0), x))
  loss = lambda z, p: jnp.sum(jax.nn.log_softmax(m.apply(p, z))[:, 0])
  vg = jax.value_and_grad(loss, argnums=(0, 1))
  want = jax.jit(vg)(x, v)
  got = jax.jit(conv_layout.canonical_convs(vg))(x, v)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-10,
                               atol=1e-10 * float(jnp.abs(w).max()))
  left = _all_convs(jax.make_jaxpr(conv_layout.canonical_convs(vg))(
      x, v).jaxpr)
  assert left and not any(grouped_conv.is_grouped(e.params) for e in left)
