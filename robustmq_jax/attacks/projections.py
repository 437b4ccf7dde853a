"""Per-example norms, steepest-ascent directions and projections onto balls.

All functions act on a batch [B, ...]: norms reduce every axis but the first.
`eps` may be a Python float, a traced scalar or a per-example vector [B].
"""

import jax
import jax.numpy as jnp

from robustmq_jax.errors import invalid

NORMS = ('linf', 'l2', 'l1')
TINY = 1e-12


def check_norm(norm: str, allowed=NORMS, field: str = 'norm') -> str:
  if norm not in allowed:
    raise invalid(field, norm, allowed)
  return norm


def per_example(v: jax.Array, like: jax.Array) -> jax.Array:
  """Reshapes a scalar or [B] vector to broadcast against `like` [B, ...]."""
  v = jnp.asarray(v, jnp.float32)
  if v.ndim == 0:
    return v
  return v.reshape(v.shape + (1,) * (like.ndim - v.ndim))


def flat(x: jax.Array) -> jax.Array:
  return x.reshape(x.shape[0], -1)


def lp_norm(v: jax.Array, norm: str) -> jax.Array:
  """Per-example norm [B] of a batch of perturbations."""
  a = jnp.abs(flat(v))
  if norm == 'linf':
    return jnp.max(a, axis=1)
  if norm == 'l2':
    return jnp.sqrt(jnp.sum(a * a, axis=1))
  if norm == 'l1':
    return jnp.sum(a, axis=1)
  raise invalid('norm', norm, NORMS)


def normalize(v: jax.Array, norm: str) -> jax.Array:
  """Scales every example to unit `norm` (zero stays zero)."""
  return v / per_example(lp_norm(v, norm) + TINY, v)


def ascent_direction(grad: jax.Array, norm: str) -> jax.Array:
  """The step direction of PGD under `norm`.

  linf: sign(grad) (steepest ascent); l2: grad / ||grad||_2 (steepest
  ascent); l1: grad / ||grad||_1, the dense direction of IBM ART's L1 PGD
  used by RobustART (exact L1 steepest ascent would move one pixel).
  """
  if norm == 'linf':
    return jnp.sign(grad)
  return normalize(grad, norm)


def project_l1_ball(delta: jax.Array, eps) -> jax.Array:
  """Euclidean projection onto the L1 ball (Duchi et al., ICML 2008)."""
  v = flat(delta)
  a = jnp.abs(v)
  eps = jnp.broadcast_to(jnp.asarray(eps, jnp.float32), (v.shape[0],))
  u = -jnp.sort(-a, axis=1)                          # descending
  css = jnp.cumsum(u, axis=1)
  j = jnp.arange(1, v.shape[1] + 1, dtype=jnp.float32)
  positive = u - (css - eps[:, None]) / j > 0
  rho = jnp.maximum(jnp.sum(positive, axis=1), 1)    # count of kept entries
  css_rho = jnp.take_along_axis(css, (rho - 1)[:, None], axis=1)[:, 0]
  theta = jnp.maximum((css_rho - eps) / rho, 0.0)
  inside = jnp.sum(a, axis=1) <= eps
  theta = jnp.where(inside, 0.0, theta)
  out = jnp.sign(v) * jnp.maximum(a - theta[:, None], 0.0)
  return out.reshape(delta.shape)


def project_ball(delta: jax.Array, eps, norm: str) -> jax.Array:
  """Projects perturbations onto the `norm` ball of radius `eps`.

  linf: clipping; l2: radial scaling (the Euclidean projection); l1: the
  exact Euclidean projection of `project_l1_ball`.
  """
  if norm == 'linf':
    e = per_example(eps, delta)
    return jnp.clip(delta, -e, e)
  if norm == 'l2':
    n = lp_norm(delta, 'l2')
    scale = jnp.minimum(1.0, jnp.asarray(eps, jnp.float32) / (n + TINY))
    return delta * per_example(scale, delta)
  if norm == 'l1':
    return project_l1_ball(delta, eps)
  raise invalid('norm', norm, NORMS)


def clip_to_ball_and_box(x_adv: jax.Array, x: jax.Array, eps,
                         norm: str) -> jax.Array:
  """Projects onto the ball around `x`, then clips to the image box [0, 1].

  Clipping to the box only shrinks |delta| per pixel, so the result stays in
  the ball for every norm.
  """
  return jnp.clip(x + project_ball(x_adv - x, eps, norm), 0.0, 1.0)
