"""Square Attack (Andriushchenko et al., ECCV 2020), score-based, no gradients.

Follows fra31/auto-attack's ``SquareAttack`` (margin loss, p_init 0.8, the
p schedule rescaled to the query budget). Every query changes one random
square per image: L-inf sets the square to x +- eps with one random sign per
channel; L2 moves mass between two squares with the "meta" pattern of nested
rectangles. A candidate replaces the current point when it lowers the loss or
misclassifies. Squares, signs and patterns are drawn per example from its own
key (the reference draws one square per batch), so results do not depend on
the batch.

The query loop is a `lax.while_loop` that stops as soon as every attacked
example of the batch is misclassified; it only needs `logits_fn`'s forward,
so it probes the model exactly as deployed (e.g. the real-integer graph).
Images must be NHWC. One compile per shape and (norm, n_queries, restarts).
"""

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from robustmq_jax.attacks import autopgd as apgd_lib
from robustmq_jax.attacks import losses
from robustmq_jax.attacks import projections
from robustmq_jax.attacks import sampling
from robustmq_jax.attacks.projected_gradient import check_count
from robustmq_jax.errors import invalid

LogitsFn = Callable[[jax.Array], jax.Array]
SQUARE_NORMS = ('linf', 'l2')
_INIT_STREAM = 2**31 - 1   # key stream of the initial perturbation
# (upper bound of the rescaled iteration, divisor of p_init), in order.
_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32),
             (4000, 64), (6000, 128), (8000, 256))


def p_selection(i: jax.Array, n_queries: int, p_init: float) -> jax.Array:
  """Fraction of pixels the square covers at query i (reference schedule)."""
  it = (i * 10000) // n_queries
  divisor = jnp.full((), 512.0, jnp.float32)
  for bound, div in reversed(_SCHEDULE):
    divisor = jnp.where(it <= bound, float(div), divisor)
  return p_init / divisor


def _margin_and_loss(logits_fn, y, loss):
  def f(x):
    z = logits_fn(x).astype(jnp.float32)
    m = -losses.margin(z, y)                # z_y - max other; > 0: correct
    if loss == 'margin':
      return m, m
    return m, -losses.cross_entropy(z, y)
  return f


def _square_mask(h, w, top, left, size):
  """[B, H, W, 1] bool, True inside each example's square."""
  rows = jnp.arange(h)[None, :, None, None]
  cols = jnp.arange(w)[None, None, :, None]
  t = top[:, None, None, None]
  l = left[:, None, None, None]
  return (rows >= t) & (rows < t + size) & (cols >= l) & (cols < l + size)


def _random_offset(keys, limit):
  """floor(U * limit) per example: an int in [0, limit) (0 if limit <= 0)."""
  u = sampling.uniform(keys, ())
  return jnp.floor(u * jnp.maximum(limit, 0)).astype(jnp.int32)


_INV_SQ_CUMSUM = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, 4097)
                                                   ** 2)]).astype(np.float32)


def _rectangles(i, j, nx, ny):
  """Reference ``eta_rectangles(nx, ny)`` at integer coords (unnormalised)."""
  table = jnp.asarray(_INV_SQ_CUMSUM)
  k = jnp.maximum(nx // 2 + 1, ny // 2 + 1)
  m = jnp.maximum(jnp.abs(i - nx // 2), jnp.abs(j - ny // 2))
  inside = (i >= 0) & (i < nx) & (j >= 0) & (j < ny)
  val = jnp.take(table, k) - jnp.take(table, jnp.clip(m, 0, 4096))
  return jnp.where(inside & (m < k), val, 0.0)


def _unit(v, axes=(1, 2)):
  n = jnp.sqrt(jnp.sum(v * v, axis=axes, keepdims=True))
  return v / jnp.where(n > 0, n, 1.0)


def _meta_pattern(h, w, top, left, size, transpose):
  """The reference's ``eta(size)`` placed at (top, left): [B, H, W, 1].

  Upper half: nested rectangles, lower half: their negative, each half and
  the whole scaled to unit L2 norm; transposed where `transpose`.
  """
  rows = jnp.arange(h)[None, :, None] - top[:, None, None]
  cols = jnp.arange(w)[None, None, :] - left[:, None, None]
  t = transpose[:, None, None]
  li, lj = jnp.where(t, cols, rows), jnp.where(t, rows, cols)
  half = size // 2
  upper = _unit(_rectangles(li, lj, half, size))
  lower = _unit(_rectangles(li - half, lj, size - half, size))
  return _unit(upper - lower)[..., None]


def _eta_np(size: int) -> np.ndarray:
  """The reference's ``eta(size)`` (before its random transpose), numpy."""
  i, j = np.meshgrid(np.arange(size), np.arange(size), indexing='ij')
  half = size // 2

  def rect(i, j, nx, ny):
    if nx == 0:
      return np.zeros_like(i, np.float64)
    k = max(nx // 2 + 1, ny // 2 + 1)
    m = np.maximum(np.abs(i - nx // 2), np.abs(j - ny // 2))
    inside = (i >= 0) & (i < nx)
    val = _INV_SQ_CUMSUM[k] - _INV_SQ_CUMSUM[np.clip(m, 0, k)]
    out = np.where(inside, val, 0.0)
    n = np.sqrt((out ** 2).sum())
    return out / n if n > 0 else out

  eta = rect(i, j, half, size) - rect(i - half, j, size - half, size)
  return (eta / np.sqrt((eta ** 2).sum())).astype(np.float32)


def _init_l2(keys, x):
  """The reference's initial L2 perturbation: a grid of size-h//5 patterns.

  Each block gets the pattern `_eta_np`, transposed at random, times a random
  sign per channel (per example and block; the reference shares the
  transpose across the batch). Blocks start at (h - 5 s) // 2 and tile the
  image; parts beyond the border are cut.
  """
  b, h, w, c = x.shape
  s = max(h // 5, 1)
  start = (h - 5 * s) // 2
  n_r, n_c = h // s, w // s

  def blocks(n, size):
    pos = np.arange(size) - start
    idx = pos // s
    ok = (pos >= 0) & (idx < n)
    return np.clip(idx, 0, n - 1), np.where(ok, pos - idx * s, 0), ok

  br, li, ok_r = blocks(n_r, h)
  bcol, lj, ok_c = blocks(n_c, w)
  eta = _eta_np(s)
  plain = eta[li[:, None], lj[None, :]]
  swapped = eta.T[li[:, None], lj[None, :]]
  valid = (ok_r[:, None] & ok_c[None, :]).astype(np.float32)
  k = jax.vmap(jax.random.split)(keys)
  flip = sampling.uniform(k[:, 0], (n_r, n_c)) > 0.5        # [B, nr, nc]
  sign = sampling.rademacher(k[:, 1], (n_r, n_c, c))        # [B, nr, nc, C]
  flip_px = flip[:, br][:, :, bcol]                         # [B, H, W]
  sign_px = sign[:, br][:, :, bcol]                         # [B, H, W, C]
  pattern = jnp.where(flip_px, swapped, plain) * valid
  return pattern[..., None] * sign_px


def single_run(keys, logits_fn, x, y, attacked, *, eps, norm, n_queries,
               p_init, loss):
  """One Square Attack run on the examples in `attacked`.

  Returns:
    (best points [B, ...], robust [B], margin [B]): robust = margin > 0.
  """
  b, h, w, c = x.shape
  bc = lambda v: projections.per_example(v, x)
  e = bc(eps)
  query = _margin_and_loss(logits_fn, y, loss)
  init_keys = sampling.fold(keys, _INIT_STREAM)
  if norm == 'linf':
    stripes = sampling.rademacher(init_keys, (1, w, c))
    x_best = jnp.clip(x + e * stripes, 0.0, 1.0)
  else:
    x_best = jnp.clip(x + projections.normalize(_init_l2(init_keys, x), 'l2')
                      * e, 0.0, 1.0)
  margin_min, loss_min = query(x_best)

  def draw(i):
    k = jax.vmap(lambda k: jax.random.split(k, 6))(sampling.fold(keys, i))
    return [k[:, j] for j in range(6)]

  def step_linf(i, x_best):
    p = p_selection(i, n_queries, p_init)
    size = jnp.maximum(jnp.round(jnp.sqrt(p * h * w)), 1).astype(jnp.int32)
    k = draw(i)
    top = _random_offset(k[0], h - size)
    left = _random_offset(k[1], w - size)
    sign = sampling.rademacher(k[2], (c,))[:, None, None, :]
    mask = _square_mask(h, w, top, left, size)
    x_new = x_best + jnp.where(mask, 2.0 * e * sign, 0.0)
    return jnp.clip(jnp.clip(x_new, x - e, x + e), 0.0, 1.0)

  def step_l2(i, x_best):
    p = p_selection(i, n_queries, p_init)
    size = jnp.maximum(jnp.round(jnp.sqrt(p * h * w)), 3).astype(jnp.int32)
    size = size + (size % 2 == 0)
    k = draw(i)
    top, left = _random_offset(k[0], h - size), _random_offset(k[1], w - size)
    top2 = _random_offset(k[2], h - size)
    left2 = _random_offset(k[3], w - size)
    flip = sampling.uniform(k[4], ()) > 0.5
    sign = sampling.rademacher(k[5], (c,))[:, None, None, :]
    delta = x_best - x
    mask1 = _square_mask(h, w, top, left, size)
    mask2 = _square_mask(h, w, top2, left2, size)
    window1 = jnp.sqrt(jnp.sum(jnp.where(mask1, delta, 0.0) ** 2, axis=(1, 2),
                               keepdims=True))
    norm_image = bc(projections.lp_norm(delta, 'l2'))
    norm_windows = bc(projections.lp_norm(
        jnp.where(mask1 | mask2, delta, 0.0), 'l2'))
    new = (_meta_pattern(h, w, top, left, size, flip) * sign +
           jnp.where(mask1, delta, 0.0) / (1e-12 + window1))
    new = jnp.where(mask1, new, 0.0)
    budget = jnp.sqrt(jnp.maximum(e ** 2 - norm_image ** 2, 0.0) / c +
                      norm_windows ** 2)
    new = new / (1e-12 + jnp.sqrt(jnp.sum(new ** 2, axis=(1, 2),
                                          keepdims=True))) * budget
    delta = jnp.where(mask1, new, jnp.where(mask2, 0.0, delta))
    return jnp.clip(x + projections.normalize(delta, 'l2') * e, 0.0, 1.0)

  step = step_linf if norm == 'linf' else step_l2

  def cond(c):
    i, _, margin_min, _ = c
    return (i < n_queries) & jnp.any(attacked & (margin_min > 0))

  def body(c):
    i, x_best, margin_min, loss_min = c
    todo = attacked & (margin_min > 0)
    x_new = step(i, x_best)
    margin, loss_new = query(x_new)
    improved = loss_new < loss_min
    loss_min = jnp.where(todo & improved, loss_new, loss_min)
    take = todo & (improved | (margin <= 0))
    margin_min = jnp.where(take, margin, margin_min)
    x_best = jnp.where(bc(take), x_new, x_best)
    return i + 1, x_best, margin_min, loss_min

  init = (jnp.zeros((), jnp.int32), x_best, margin_min, loss_min)
  _, x_best, margin_min, _ = jax.lax.while_loop(cond, body, init)
  return x_best, margin_min > 0, margin_min


def square_with_robust(key, logits_fn, x, y, *, eps, norm='linf',
                       n_queries=5000, restarts=1, p_init=0.8, loss='margin',
                       robust=None):
  """`square` returning (float32 images, robust [B])."""
  projections.check_norm(norm, SQUARE_NORMS)
  check_count('n_queries', n_queries, 1)
  check_count('restarts', restarts, 1)
  if loss not in ('margin', 'ce'):
    raise invalid('loss', loss, ('margin', 'ce'))
  if x.ndim != 4:
    raise invalid('x.shape', x.shape, 'NHWC images [B, H, W, C]')
  if not 0.0 < p_init <= 1.0:
    raise invalid('p_init', p_init, 'a number in (0, 1]')
  x = x.astype(jnp.float32)
  keys = sampling.example_keys(key, x.shape[0])
  if robust is None:
    robust = losses.predicts(logits_fn(x), y)

  def run(r):
    # `robust` here is the set at the start; sequential_runs keeps results
    # only for examples still robust before this restart.
    adv, still, margin = single_run(
        sampling.fold(keys, r), logits_fn, x, y, robust, eps=eps, norm=norm,
        n_queries=n_queries, p_init=p_init, loss=loss)
    return adv, still, adv, -margin

  return apgd_lib.sequential_runs(restarts, run, x, robust)


def square(
    key: jax.Array,
    logits_fn: LogitsFn,
    x: jax.Array,
    y: jax.Array,
    *,
    eps,
    norm: str = 'linf',
    n_queries: int = 5000,
    restarts: int = 1,
    p_init: float = 0.8,
    loss: str = 'margin',
    attack_mask: jax.Array | None = None,
) -> jax.Array:
  """Square Attack, untargeted, L-inf or L2.

  Args:
    key: PRNG key or per-example keys [B].
    logits_fn: images -> logits (only evaluated, never differentiated).
    x: NHWC images in [0, 1].
    y: labels [B].
    eps: budget (scalar or [B]); traced.
    norm: 'linf' or 'l2'.
    n_queries: queries per restart (AutoAttack: 5000).
    restarts: restarts, each only on examples still robust.
    p_init: initial fraction of pixels per square (0.8).
    loss: 'margin' (default) or 'ce'.
    attack_mask: optional [B] bool; examples outside it are not attacked
      and do not keep the query loop running (e.g. padding rows).

  Returns:
    Images of `x`'s shape and dtype: adversarials where found; the clean
    image where the model is already wrong; else the lowest-margin point.
  """
  robust = None
  if attack_mask is not None:
    robust = losses.predicts(logits_fn(x), y) & attack_mask
  out, _ = square_with_robust(key, logits_fn, x, y, eps=eps, norm=norm,
                              n_queries=n_queries, restarts=restarts,
                              p_init=p_init, loss=loss, robust=robust)
  return out.astype(x.dtype)
