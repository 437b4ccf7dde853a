"""Tests of the defense building blocks: layers, DQ penalty, spectral norms."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustmq_jax import models
from robustmq_jax.defenses import layers as layers_lib
from robustmq_jax.defenses import lipschitz
from robustmq_jax.defenses import orthogonality


def _rng(seed=0):
  return np.random.default_rng(seed)


@functools.lru_cache(maxsize=None)
def _tiny_resnet_layers():
  def module_fn(ops):
    return models.get_model('resnet20_cifar', num_classes=10, ops=ops,
                            stage_sizes=(1, 1), widths=(4, 8))
  module = module_fn(models.FLOAT_OPS)
  # Random values of the right shapes (cheaper than compiling init).
  shapes = jax.eval_shape(module.init, jax.random.key(0),
                          jnp.zeros((1, 8, 8, 3)))
  rng = _rng(5)
  variables = jax.tree.map(
      lambda s: jnp.asarray(rng.normal(size=s.shape) * 0.3, s.dtype), shapes)
  return module_fn, variables, layers_lib.weight_layers(
      module_fn, variables, (8, 8, 3))


def test_weight_layers_cover_every_kernel_in_order():
  _, variables, found = _tiny_resnet_layers()
  kernels = {'/'.join(str(k.key) for k in path[:-1])
             for path, _ in jax.tree_util.tree_leaves_with_path(
                 variables['params']) if path[-1].key == 'kernel'}
  assert set(found) == kernels
  assert list(found)[0] == 'conv1' and found['conv1'].first
  assert list(found)[-1] == 'fc' and found['fc'].last
  assert found['conv1'].contracting == (0, 1, 2)
  assert found['fc'].contracting == (0,)


def test_weight_layers_vit_dense_general_axes():
  def module_fn(ops):
    return models.get_model('vit_tiny_patch4_32', num_classes=10, ops=ops,
                            hidden_size=16, depth=1, num_heads=2, mlp_dim=8)
  module = module_fn(models.FLOAT_OPS)
  variables = jax.eval_shape(
      lambda: module.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3))))
  found = layers_lib.weight_layers(module_fn, variables, (8, 8, 3))
  p = 'Transformer/encoderblock_0/MultiHeadDotProductAttention_1/'
  assert found[p + 'query'].contracting == (0,)     # (D, heads, head_dim)
  assert found[p + 'out'].contracting == (0, 1)     # (heads, head_dim, D)
  assert found[p + 'out'].fan_in == 16 and found[p + 'out'].fan_out == 16


def test_apply_layer_matches_model_layer():
  """The recorded conv settings reproduce the conv (explicit padding)."""
  _, variables, found = _tiny_resnet_layers()
  layer = found['layer2_0/conv1']  # stride 2
  x = jnp.asarray(_rng().normal(size=layer.input_shape), jnp.float32)
  k = variables['params']['layer2_0']['conv1']['kernel']
  ref = jax.lax.conv_general_dilated(x, k, (2, 2), ((1, 1), (1, 1)),
                                     dimension_numbers=('NHWC', 'HWIO',
                                                        'NHWC'))
  np.testing.assert_allclose(layers_lib.apply_layer(layer, x, k), ref,
                             rtol=1e-5, atol=1e-5)


def test_kernel_matrix_conv_layout():
  k = jnp.asarray(_rng().normal(size=(3, 3, 2, 5)), jnp.float32)
  w = layers_lib.kernel_matrix(k, (0, 1, 2))
  assert w.shape == (5, 18)
  np.testing.assert_allclose(w[4], np.asarray(k)[..., 4].reshape(-1))


@pytest.mark.parametrize('shape', [(6, 4), (4, 6), (5, 5)])
def test_gram_deviation_equals_direct_computation(shape):
  w = _rng(1).normal(size=shape).astype(np.float32)
  m, n = shape
  wtw = np.sum((w.T @ w - np.eye(n))**2)
  wwt = np.sum((w @ w.T - np.eye(m))**2)
  np.testing.assert_allclose(orthogonality.gram_deviation(w, 'wtw'), wtw,
                             rtol=1e-5)
  np.testing.assert_allclose(orthogonality.gram_deviation(w, 'wwt'), wwt,
                             rtol=1e-5)
  np.testing.assert_allclose(orthogonality.gram_deviation(w, 'auto'),
                             min(wtw, wwt), rtol=1e-5)
  # The two forms differ by |m - n| (singular-value identity in the module
  # docstring), so their gradients agree.
  np.testing.assert_allclose(wtw - wwt, n - m, rtol=1e-4, atol=1e-3)
  g1 = jax.grad(orthogonality.gram_deviation)(jnp.asarray(w), 'wtw')
  g2 = jax.grad(orthogonality.gram_deviation)(jnp.asarray(w), 'wwt')
  np.testing.assert_allclose(g1, g2, rtol=1e-4, atol=1e-4)


def test_penalty_equals_direct_sum_over_model_kernels():
  _, variables, found = _tiny_resnet_layers()
  params = variables['params']
  beta = 3e-4
  direct = 0.0
  for path, layer in found.items():
    k = np.asarray(layers_lib.get_kernel(params, path), np.float64)
    out_axes = [a for a in range(k.ndim) if a not in layer.contracting]
    w = np.transpose(k, out_axes + list(layer.contracting)).reshape(
        layer.fan_out, layer.fan_in)
    g = w @ w.T if w.shape[0] < w.shape[1] else w.T @ w
    direct += np.sum((g - np.eye(len(g)))**2)
  penalty = orthogonality.make_penalty(found, beta=beta)
  np.testing.assert_allclose(penalty(params), beta / 2 * direct, rtol=1e-5)


def test_penalty_gradient_drives_gram_to_identity():
  w0 = jnp.asarray(_rng(2).normal(size=(8, 20)) * 0.7, jnp.float32)
  layer = layers_lib.WeightLayer('d', 'dense', (20, 8), (0,), (1, 20))
  params = {'d': {'kernel': w0.T}}
  penalty = orthogonality.make_penalty({'d': layer}, beta=1.0)
  grad = jax.jit(jax.grad(penalty))
  before = float(penalty(params))
  for _ in range(300):
    g = grad(params)
    params = jax.tree.map(lambda p, d: p - 0.02 * d, params, g)
  after = float(penalty(params))
  w = np.asarray(params['d']['kernel']).T
  assert after < 1e-4 * before
  np.testing.assert_allclose(w @ w.T, np.eye(8), atol=1e-2)
  np.testing.assert_allclose(np.linalg.svd(w, compute_uv=False), 1.0,
                             atol=1e-2)


@pytest.mark.parametrize('shape,seed', [((30, 50), 0), ((64, 16), 1),
                                        ((96, 96), 2), ((10, 300), 3)])
def test_spectral_norm_matches_linalg_norm(shape, seed):
  w = jnp.asarray(_rng(seed).normal(size=shape), jnp.float32)
  est = float(lipschitz.spectral_norm(w, iters=100))
  ref = float(jnp.linalg.norm(w, 2))
  assert abs(est - ref) <= 0.01 * ref
  assert est <= ref * (1 + 1e-5)  # Power iteration approaches from below.


def test_conv_operator_norm_matches_explicit_matrix():
  """Power iteration on the conv operator vs the norm of its Jacobian."""
  k = jnp.asarray(_rng(4).normal(size=(3, 3, 2, 3)), jnp.float32)
  conv = (('window_strides', (1, 1)), ('padding', ((1, 1), (1, 1))),
          ('lhs_dilation', None), ('rhs_dilation', None),
          ('dimension_numbers', ('NHWC', 'HWIO', 'NHWC')),
          ('feature_group_count', 1), ('batch_group_count', 1))
  layer = layers_lib.WeightLayer('c', 'conv', (3, 3, 2, 3), (0, 1, 2),
                                 (1, 6, 6, 2), conv)
  jac = jax.jacobian(lambda x: layers_lib.apply_layer(layer, x, k))(
      jnp.zeros((1, 6, 6, 2)))
  ref = float(jnp.linalg.norm(jac.reshape(6 * 6 * 3, 6 * 6 * 2), 2))
  est = float(lipschitz.conv_operator_norm(k, layer, iters=200))
  assert abs(est - ref) <= 0.01 * ref
  # The reshaped-kernel norm is a different (smaller) quantity for k > 1.
  assert float(lipschitz.kernel_norm(k, layer)) < ref
