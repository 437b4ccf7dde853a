"""LAAQ: the greedy layer-wise selection equals a brute-force search."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustmq_jax.defenses import laaq
from robustmq_jax.models.ops import FLOAT_OPS
from robustmq_jax.models.ops import Ops
from robustmq_jax.models.ops import Role
from robustmq_jax.quant.plan import LayerQuant
from robustmq_jax.quant.plan import TensorQuant

BITS = 2
W_FRACS = (1.0, 0.8, 0.6, 0.4)
A_FRACS = (1.0, 0.7, 0.5, 0.3)


class TwoLayer(nn.Module):
  """Dense(6) -> ReLU -> Dense(3) on flattened 2x2x1 images."""
  ops: Ops = FLOAT_OPS

  @nn.compact
  def __call__(self, x, train=False):
    del train
    x = x.reshape(x.shape[0], -1)
    x = nn.Dense(6, name='d1', dot_general_cls=self.ops.dot_general_cls(
        Role('d1', 'dense', first=True)))(x)
    x = nn.relu(x)
    return nn.Dense(3, name='d2', dot_general_cls=self.ops.dot_general_cls(
        Role('d2', 'dense', last=True)))(x)


def _case(seed=0):
  rng = np.random.default_rng(seed)
  variables = {'params': {
      'd1': {'kernel': rng.normal(size=(4, 6)).astype(np.float32),
             'bias': rng.normal(size=(6,)).astype(np.float32) * 0.1},
      'd2': {'kernel': rng.normal(size=(6, 3)).astype(np.float32),
             'bias': np.zeros((3,), np.float32)}}}
  # Heavy-tailed kernels make clipping worth something.
  variables['params']['d1']['kernel'][0, 0] = 4.0
  variables['params']['d2']['kernel'][2, 1] = -3.5
  images = rng.uniform(0.2, 0.8, size=(32, 2, 2, 1)).astype(np.float32)
  plan = {
      'd1': LayerQuant('d1', 'dense', TensorQuant(BITS, True, None),
                       TensorQuant(BITS, False, (0, 1)), (4, 6)),
      'd2': LayerQuant('d2', 'dense', TensorQuant(BITS, True, None),
                       TensorQuant(BITS, False, (0, 1)), (6, 3)),
  }
  return variables, [images[:16], images[16:]], plan


def _np_fake_quant(x, bound, unsigned):
  half = (2**BITS - 1) if unsigned else (2**BITS - 1) / 2
  qmin, qmax = (0, 2**BITS - 1) if unsigned else (-2**(BITS - 1),
                                                  2**(BITS - 1) - 1)
  scale = np.float32(bound) / np.float32(half)
  return np.clip(np.round(x * (np.float32(1) / scale)), qmin, qmax) * scale


def _brute_force_numpy(variables, images, eps):
  """Independent exhaustive search of the chain bound (numpy, exact norms)."""
  x = np.concatenate(images).reshape(-1, 4).astype(np.float64)
  p = variables['params']
  w1, w2 = p['d1']['kernel'].T, p['d2']['kernel'].T
  h = np.maximum(x @ w1.T + p['d1']['bias'], 0)
  e0 = eps * 2.0  # ||eps * sign||_2 over 4 pixels (no clipping in range).
  def layer(w, inp, wf, af):
    wq = _np_fake_quant(w, wf * np.abs(w).max(), False)
    xq = _np_fake_quant(inp, af * np.abs(inp).max(), True)
    err = np.sqrt(np.mean(np.sum((inp @ w.T - xq @ wq.T)**2, axis=1)))
    return np.linalg.norm(wq, 2), err
  best, best_e = None, np.inf
  for wf1 in W_FRACS:
    for af1 in A_FRACS:
      l1, e1 = layer(w1, x, wf1, af1)
      for wf2 in W_FRACS:
        for af2 in A_FRACS:
          l2, e2 = layer(w2, h, wf2, af2)
          e = l2 * (l1 * e0 + e1) + e2
          if e < best_e:
            best, best_e = (wf1, af1, wf2, af2), e
  return best, best_e


@pytest.mark.parametrize('eps', [0.0, 0.05, 0.2])
def test_selection_matches_brute_force_on_two_layers(eps):
  variables, batches, plan = _case()
  settings = laaq.Settings(w_fracs=W_FRACS, a_fracs=A_FRACS, eps=eps,
                           lipschitz='matrix', iters=300, fold_bn=False)
  result = laaq.select(lambda ops: TwoLayer(ops), variables, batches, plan,
                       settings)
  best, best_e = _brute_force_numpy(variables, batches, eps)
  picked = (result.choices['d1']['w_frac'], result.choices['d1']['a_frac'],
            result.choices['d2']['w_frac'], result.choices['d2']['a_frac'])
  assert picked == best
  np.testing.assert_allclose(result.bound, best_e, rtol=1e-3)
  assert result.bound <= result.bound_uniform + 1e-9


def test_tables_greedy_equals_exhaustive_and_lipschitz_matters():
  variables, batches, plan = _case()
  settings = laaq.Settings(w_fracs=W_FRACS, a_fracs=A_FRACS, eps=0.2,
                           lipschitz='matrix', iters=300, fold_bn=False)
  a = laaq.analyse(lambda ops: TwoLayer(ops), variables, batches, plan,
                   settings)
  picks, es = laaq.select_chain(a.tables, a.e0)
  bf, bf_e = laaq.brute_force(a.tables, a.e0)
  assert picks == bf
  np.testing.assert_allclose(es[-1], bf_e, rtol=1e-9)
  # The Lipschitz term changes the choice: with no perturbation the second
  # layer would pick its least-error setting, which is a different one.
  t2 = a.tables[1]
  least_error = np.unravel_index(np.argmin(t2.err), t2.err.shape)
  assert tuple(picks[1]) != tuple(int(i) for i in least_error)


def test_scales_follow_the_chosen_fractions():
  variables, batches, plan = _case()
  settings = laaq.Settings(w_fracs=W_FRACS, a_fracs=A_FRACS, eps=0.05,
                           lipschitz='matrix', fold_bn=False)
  r = laaq.select(lambda ops: TwoLayer(ops), variables, batches, plan,
                  settings)
  k = variables['params']['d2']['kernel']
  half_w = (2**BITS - 1) / 2
  np.testing.assert_allclose(
      r.scales['d2']['rhs'],
      np.full((1, 1), r.choices['d2']['w_frac'] * np.abs(k).max() / half_w),
      rtol=1e-6)
  amax = np.abs(np.concatenate(batches)).max()
  np.testing.assert_allclose(
      r.scales['d1']['lhs'], r.choices['d1']['a_frac'] * amax / (2**BITS - 1),
      rtol=1e-6)


def test_measured_propagation_runs_and_agrees_on_first_layer():
  variables, batches, plan = _case()
  kw = dict(w_fracs=W_FRACS, a_fracs=A_FRACS, eps=0.05, lipschitz='matrix',
            fold_bn=False)
  bound = laaq.select(lambda ops: TwoLayer(ops), variables, batches, plan,
                      laaq.Settings(propagation='bound', **kw))
  measured = laaq.select(lambda ops: TwoLayer(ops), variables, batches, plan,
                         laaq.Settings(propagation='measured', **kw))
  assert measured.choices['d1'] == bound.choices['d1']
  # The observed perturbation at layer 2 cannot exceed its bound.
  assert (measured.choices['d2']['e_in'] <=
          bound.choices['d1']['e_out'] * (1 + 1e-6))
