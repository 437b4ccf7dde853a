"""FAB, the fast adaptive boundary attack (Croce & Hein, ICML 2020).

Follows fra31/auto-attack's ``FABAttack``: at each step the decision
boundary towards a class is linearised at the current point x1, both x1 and
the clean image x0 are projected onto that hyperplane inside the box
(`fab_projections`), and the next point is the extrapolated (eta) convex
combination of the two projections, biased towards x0 by
alpha = min(|d1| / (|d1| + |d0|), alpha_max). When x1 is adversarial it is
recorded if closer than the best so far, then pulled back towards x0 by beta.
FAB is a minimum-norm attack: an example counts as broken only if its closest
adversarial lies within eps.

FAB-T (targeted, AutoAttack's variant) uses one class at a time: the gradient
of z_t - z_y. Untargeted FAB needs the Jacobian of all class differences
(C backward passes, vmapped), so it is practical only for few classes.

Loops are `lax.fori_loop`; one compile per shape and static setting, `eps`
traced. Each step costs one forward+backward and one forward.
"""

from typing import Callable

import jax
import jax.numpy as jnp

from robustmq_jax.attacks import autopgd as apgd_lib
from robustmq_jax.attacks import fab_projections
from robustmq_jax.attacks import losses
from robustmq_jax.attacks import projections
from robustmq_jax.attacks import sampling
from robustmq_jax.attacks.projected_gradient import check_count
from robustmq_jax.errors import invalid

LogitsFn = Callable[[jax.Array], jax.Array]
_DUAL = {'linf': 'l1', 'l2': 'l2', 'l1': 'linf'}


def _targeted_differences(logits_fn, y, target):
  """x -> (z_t - z_y [B, 1], its gradient [B, 1, D])."""
  def diffs(x1):
    objective = lambda z: (losses.label_logit(z, target) -
                           losses.label_logit(z, y))
    df, _, dg = losses.loss_and_grad(logits_fn, objective, x1)
    return df[:, None], projections.flat(dg)[:, None]
  return diffs


def _all_differences(logits_fn, y):
  """x -> (z_j - z_y for all j [B, C], Jacobian [B, C, D]); j = y excluded."""
  def diffs(x1):
    logits, vjp = jax.vjp(lambda v: logits_fn(v).astype(jnp.float32), x1)
    c = logits.shape[-1]
    eye = jnp.eye(c, dtype=jnp.float32)
    onehot_y = jax.nn.one_hot(y, c, dtype=jnp.float32)
    cot = eye[:, None, :] - onehot_y[None]               # [C, B, C]
    jac = jax.vmap(lambda g: vjp(g)[0])(cot)             # [C, B, ...]
    jac = jnp.moveaxis(jac.reshape(c, x1.shape[0], -1), 0, 1)
    df = logits - losses.label_logit(logits, y)[:, None]
    df = jnp.where(onehot_y > 0, 1e10, df)
    return df, jac
  return diffs


def single_run(logits_fn, x, y, diffs, *, eps, norm, steps, alpha_max, eta,
               beta, start_keys=None):
  """One FAB run.

  Args:
    logits_fn: images -> logits.
    x: float32 images [B, ...].
    y: labels [B].
    diffs: x1 -> (differences [B, K], their gradients [B, K, D]).
    eps: budget; also scales the random start.
    norm: 'linf', 'l2' or 'l1'.
    steps: iterations.
    alpha_max, eta, beta: FAB's step parameters.
    start_keys: per-example keys for a random start (None: start at x).

  Returns:
    (images, robust [B]): the closest adversarial found where it lies within
    eps, else x.
  """
  project = fab_projections.PROJECTIONS[norm]
  bc = lambda v: projections.per_example(v, x)
  b_size = x.shape[0]
  x0 = projections.flat(x)
  x1 = x
  if start_keys is not None:
    if norm == 'linf':
      t = sampling.uniform(start_keys, x.shape[1:], -1.0, 1.0)
    else:
      t = sampling.normal(start_keys, x.shape[1:])
    x1 = jnp.clip(x + 0.5 * bc(eps) * projections.normalize(t, norm), 0.0,
                  1.0)

  def body(_, c):
    x1, adv, res = c
    df, dg = diffs(x1)
    dist = jnp.abs(df) / (1e-12 + _norm_last(dg, _DUAL[norm]))
    ind = jnp.argmin(dist, axis=1)
    df_i = jnp.take_along_axis(df, ind[:, None], axis=1)[:, 0]
    w = jnp.take_along_axis(dg, ind[:, None, None], axis=1)[:, 0]
    x1f = projections.flat(x1)
    b = -df_i + jnp.sum(w * x1f, axis=1)
    d = project(jnp.concatenate([x1f, x0]), jnp.concatenate([w, w]),
                jnp.concatenate([b, b]))
    d1, d2 = d[:b_size], d[b_size:]
    a1 = jnp.maximum(projections.lp_norm(d1, norm), 1e-8)
    a2 = jnp.maximum(projections.lp_norm(d2, norm), 1e-8)
    alpha = jnp.clip(a1 / (a1 + a2), 0.0, alpha_max)[:, None]
    x1f = jnp.clip((x1f + eta * d1) * (1 - alpha) + (x0 + eta * d2) * alpha,
                   0.0, 1.0)
    x1 = x1f.reshape(x.shape)
    is_adv = ~losses.predicts(logits_fn(x1), y)
    dist_x0 = projections.lp_norm(x1 - x, norm)
    closer = is_adv & (dist_x0 < res)
    adv = jnp.where(bc(closer), x1, adv)
    res = jnp.where(closer, dist_x0, res)
    x1 = jnp.where(bc(is_adv), x + (x1 - x) * beta, x1)
    return x1, adv, res

  init = (x1, x, jnp.full((b_size,), 1e10, jnp.float32))
  _, adv, res = jax.lax.fori_loop(0, steps, body, init)
  broken = res <= jnp.broadcast_to(jnp.asarray(eps, jnp.float32), res.shape)
  return jnp.where(bc(broken), adv, x), ~broken


def _norm_last(g, norm):
  a = jnp.abs(g)
  if norm == 'linf':
    return jnp.max(a, axis=-1)
  if norm == 'l2':
    return jnp.sqrt(jnp.sum(a * a, axis=-1))
  return jnp.sum(a, axis=-1)


def fab_with_robust(key, logits_fn, x, y, *, eps, norm='linf', steps=100,
                    restarts=1, targeted=True, n_target_classes=9,
                    alpha_max=0.1, eta=1.05, beta=0.9, robust=None):
  """`fab` returning (float32 images, robust [B])."""
  projections.check_norm(norm)
  check_count('steps', steps, 1)
  check_count('restarts', restarts, 1)
  c = losses.num_classes(logits_fn, x)
  if c < 2:
    raise invalid('num_classes', c, 'at least 2')
  x = x.astype(jnp.float32)
  keys = sampling.example_keys(key, x.shape[0])
  z0 = logits_fn(x)
  if robust is None:
    robust = losses.predicts(z0, y)
  common = dict(eps=eps, norm=norm, steps=steps, alpha_max=alpha_max,
                eta=eta, beta=beta)
  no_loss = jnp.full(x.shape[:1], -jnp.inf, jnp.float32)

  def finish(i, diffs):
    # Restart 0 starts at x, later restarts from a random point (reference).
    if restarts == 1:
      adv, still = single_run(logits_fn, x, y, diffs, **common)
    else:
      start = sampling.fold(keys, i)
      adv, still = jax.lax.cond(
          i % restarts == 0,
          lambda: single_run(logits_fn, x, y, diffs, **common),
          lambda: single_run(logits_fn, x, y, diffs, start_keys=start,
                             **common))
    return adv, still, x, no_loss

  if targeted:
    n_t = apgd_lib.target_count(n_target_classes, c)
    ranked = jax.lax.top_k(z0.astype(jnp.float32), n_t + 1)[1]

    def run(i):
      target = jax.lax.dynamic_index_in_dim(ranked, i // restarts + 1, axis=1,
                                            keepdims=False)
      return finish(i, _targeted_differences(logits_fn, y, target))

    return apgd_lib.sequential_runs(n_t * restarts, run, x, robust)

  run = lambda i: finish(i, _all_differences(logits_fn, y))
  return apgd_lib.sequential_runs(restarts, run, x, robust)


def fab(
    key: jax.Array,
    logits_fn: LogitsFn,
    x: jax.Array,
    y: jax.Array,
    *,
    eps,
    norm: str = 'linf',
    steps: int = 100,
    restarts: int = 1,
    targeted: bool = False,
    n_target_classes: int = 9,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
) -> jax.Array:
  """FAB attack; untargeted by default (see `fab_t` for AutoAttack's FAB-T).

  Args:
    key: PRNG key or per-example keys [B] (random starts of restarts > 0).
    logits_fn: images -> logits.
    x: images in [0, 1] [B, ...].
    y: labels [B].
    eps: budget (scalar or [B]); traced. Adversarials farther than eps are
      discarded (the example then counts as robust and x is returned).
    norm: 'linf', 'l2' or 'l1'.
    steps: iterations per run (AutoAttack: 100).
    restarts: runs per target (restart 0 starts at x, later ones at a random
      point at half of eps).
    targeted: FAB-T (top-k targets) instead of all classes at once.
    n_target_classes: k for FAB-T, capped at num_classes - 1.
    alpha_max, eta, beta: step parameters (reference defaults).

  Returns:
    Images of `x`'s shape and dtype: the closest adversarial found within eps,
    else x.
  """
  out, _ = fab_with_robust(
      key, logits_fn, x, y, eps=eps, norm=norm, steps=steps,
      restarts=restarts, targeted=targeted,
      n_target_classes=n_target_classes, alpha_max=alpha_max, eta=eta,
      beta=beta)
  return out.astype(x.dtype)


def fab_t(key, logits_fn, x, y, *, eps, norm='linf', steps=100, restarts=1,
          n_target_classes=9, **kwargs) -> jax.Array:
  """FAB-T, AutoAttack's targeted FAB against the top-k other classes."""
  return fab(key, logits_fn, x, y, eps=eps, norm=norm, steps=steps,
             restarts=restarts, targeted=True,
             n_target_classes=n_target_classes, **kwargs)
