"""conv_layout: convolutions re-emitted in XLA:CPU's canonical layout.

The rewrite must compute the same convolution (reference: the same
`lax.conv_general_dilated` call without the rewrite, float32, tolerance 1e-5
relative, only the summation order may differ) and must leave no
non-canonical convolution in the attack step loop, where XLA:CPU would run it
with its slow emitted loop.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustmq_jax import attacks
from robustmq_jax.attacks import conv_layout
from robustmq_jax.attacks import losses
from robustmq_jax.testing import digits_cnn as helpers

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
  assert len(after) == 1 and conv_layout.is_canonical(after[0])


def test_pytrees_and_functions_without_convolutions_pass_through():
  fn = lambda d: {'sum': d['a'] + d['b'], 'neg': -d['a']}
  d = {'a': jnp.arange(3.0), 'b': jnp.ones(3)}
  out = conv_layout.canonical_convs(fn)(d)
  assert set(out) == {'sum', 'neg'}
  np.testing.assert_array_equal(out['sum'], d['a'] + 1)


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
