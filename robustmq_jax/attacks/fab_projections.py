"""Minimal-norm projections onto a hyperplane inside the box [0, 1]^D.

FAB's step needs, for a point t, a hyperplane {z : w.z = b} (the linearised
decision boundary) and a norm p, the smallest ||d||_p with w.(t + d) = b and
0 <= t + d <= 1. If the box cannot reach the hyperplane, d moves every
coordinate as far towards it as the box allows (as the reference does).

The L-inf and L2 cases share one structure. After flipping the sign of (w, b)
so that c = w.t - b >= 0, every coordinate i can lower w.(t + d) by moving
towards the box face in the direction -sign(w_i), by at most cap_i = t_i
(w_i > 0) or 1 - t_i (w_i < 0). With a budget theta:
  L-inf: |d_i| = min(theta, cap_i),            decrease |w_i| min(theta, cap_i)
  L2:    |d_i| = |w_i| min(theta, cap_i/|w_i|), decrease w_i^2 min(theta, .)
i.e. G(theta) = sum_i q_i min(theta, beta_i) = c, a nondecreasing piecewise
linear equation solved exactly by sorting the breakpoints beta (instead of
the reference's bisection; the minimiser is the same). L1 spends the budget
on the coordinates with the largest |w_i| first.

Inputs are flat [B, D] float32; outputs are d [B, D].
"""

import jax.numpy as jnp


def _orient(t, w, b):
  c = jnp.sum(w * t, axis=1) - b
  s = jnp.where(c < 0, -1.0, 1.0)
  return w * s[:, None], c * s


def _capacity(t, w):
  """Distance to the box face in the direction that lowers w.z."""
  return jnp.where(w > 0, t, 1.0 - t)


def _solve_budget(q, beta, c):
  """Smallest theta >= 0 with sum q min(theta, beta) = c; inf if unreachable."""
  order = jnp.argsort(beta, axis=1)
  bs = jnp.take_along_axis(beta, order, axis=1)
  qs = jnp.take_along_axis(q, order, axis=1)
  spent = jnp.cumsum(qs * bs, axis=1)                 # saturated mass
  mass = jnp.cumsum(qs, axis=1)
  total = mass[:, -1:]
  g = spent + bs * (total - mass)                     # G at each breakpoint
  k = jnp.sum(g < c[:, None], axis=1)                 # first index with G>=c
  reachable = k < beta.shape[1]
  km = jnp.clip(k - 1, 0, beta.shape[1] - 1)
  spent_before = jnp.where(
      k > 0, jnp.take_along_axis(spent, km[:, None], axis=1)[:, 0], 0.0)
  mass_before = jnp.where(
      k > 0, jnp.take_along_axis(mass, km[:, None], axis=1)[:, 0], 0.0)
  free = total[:, 0] - mass_before
  theta = (c - spent_before) / jnp.where(free > 0, free, 1.0)
  theta = jnp.maximum(theta, 0.0)
  return jnp.where(reachable, theta, jnp.inf)


def project_linf(t, w, b):
  """Minimal L-inf move from t onto {w.z = b} within the box."""
  w, c = _orient(t, w, b)
  active = w != 0
  cap = _capacity(t, w)
  q = jnp.where(active, jnp.abs(w), 0.0)
  theta = _solve_budget(q, jnp.where(active, cap, 0.0), c)
  return jnp.where(active, -jnp.sign(w) * jnp.minimum(theta[:, None], cap),
                   0.0)


def project_l2(t, w, b):
  """Minimal L2 move from t onto {w.z = b} within the box."""
  w, c = _orient(t, w, b)
  active = jnp.abs(w) > 1e-8
  aw = jnp.where(active, jnp.abs(w), 1.0)
  beta = jnp.where(active, _capacity(t, w) / aw, 0.0)
  q = jnp.where(active, w * w, 0.0)
  theta = _solve_budget(q, beta, c)
  return jnp.where(active, -w * jnp.minimum(theta[:, None], beta), 0.0)


def project_l1(t, w, b):
  """Minimal L1 move from t onto {w.z = b} within the box."""
  w, c = _orient(t, w, b)
  active = jnp.abs(w) > 1e-8
  cap = _capacity(t, w)
  gain = jnp.where(active, jnp.abs(w) * cap, 0.0)     # max decrease per coord
  order = jnp.argsort(-jnp.abs(jnp.where(active, w, 0.0)), axis=1)
  gains = jnp.take_along_axis(gain, order, axis=1)
  before = jnp.cumsum(gains, axis=1) - gains          # decrease of earlier ones
  ws = jnp.take_along_axis(jnp.abs(w), order, axis=1)
  caps = jnp.take_along_axis(cap, order, axis=1)
  need = c[:, None] - before
  amount = jnp.clip(need / jnp.where(ws > 0, ws, 1.0), 0.0, caps)
  amount = jnp.where(need > 0, amount, 0.0)
  inv = jnp.argsort(order, axis=1)
  amount = jnp.take_along_axis(amount, inv, axis=1)
  return jnp.where(active, -jnp.sign(w) * amount, 0.0)


PROJECTIONS = {'linf': project_linf, 'l2': project_l2, 'l1': project_l1}
