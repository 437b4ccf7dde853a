"""Auto-PGD (Croce & Hein, ICML 2020): APGD-CE, APGD-DLR and APGD-T.

Follows fra31/auto-attack's ``APGDAttack`` for L-inf and L2: step size 2*eps,
momentum 0.75, and at checkpoints (after 22 % of the steps, then windows
shrinking by 3 % of the steps down to 6 %) the step size halves for every
example whose loss rose in at most ``rho`` of the window's steps or whose best
loss did not improve since the last checkpoint; those examples restart from
their best point. Each run keeps the first iterate that fools the model.

The iterations are one `lax.fori_loop` (the checkpoint schedule is a static
table), restarts and target classes an outer `lax.fori_loop` whose body is
skipped at run time once no example of the batch is still robust. One compile
per input shape and (norm, steps, restarts, targets, loss); `eps` is traced.
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from robustmq_jax.attacks import losses
from robustmq_jax.attacks import projections
from robustmq_jax.attacks import sampling
from robustmq_jax.attacks.projected_gradient import check_count
from robustmq_jax.errors import invalid

LogitsFn = Callable[[jax.Array], jax.Array]
APGD_NORMS = ('linf', 'l2')


@functools.lru_cache(maxsize=None)
def checkpoints(steps: int) -> tuple[np.ndarray, np.ndarray]:
  """APGD's checkpoint iterations and the window length at each of them."""
  k = max(int(0.22 * steps), 1)
  k_min = max(int(0.06 * steps), 1)
  decrement = max(int(0.03 * steps), 1)
  flags = np.zeros(steps, bool)
  windows = np.zeros(steps, np.int32)
  since = 0
  for i in range(steps):
    since += 1
    if since == k:
      flags[i], windows[i] = True, k
      since = 0
      k = max(k - decrement, k_min)
  return flags, windows


def _ball_step(x_adv, x, direction_step, eps, norm):
  """Moves and projects onto the ball and box, as the reference does."""
  if norm == 'linf':
    e = projections.per_example(eps, x)
    return jnp.clip(jnp.clip(x_adv + direction_step, x - e, x + e), 0.0, 1.0)
  d = x_adv + direction_step - x
  n = projections.lp_norm(d, 'l2')
  radius = jnp.minimum(jnp.asarray(eps, jnp.float32), n)
  return jnp.clip(x + projections.normalize(d, 'l2') *
                  projections.per_example(radius, x), 0.0, 1.0)


def single_run(keys, logits_fn: LogitsFn, x, y, objective, *, eps, norm: str,
               steps: int, rho: float):
  """One APGD run from a random start.

  Args:
    keys: per-example keys [B].
    logits_fn: images -> logits.
    x: float32 images [B, ...].
    y: labels [B] (success = the arg-max leaves `y`).
    objective: logits -> per-example loss to maximise.
    eps: budget (scalar or [B]).
    norm: 'linf' or 'l2'.
    steps: iterations.
    rho: oscillation threshold.

  Returns:
    (adversarial [B, ...] where found else the start, robust [B] bool,
    highest-loss point [B, ...], its loss [B]).
  """
  e = projections.per_example(eps, x)
  if norm == 'linf':
    t = sampling.uniform(keys, x.shape[1:], -1.0, 1.0)
  else:
    t = sampling.normal(keys, x.shape[1:])
  x_adv = jnp.clip(x + e * projections.normalize(t, norm), 0.0, 1.0)
  loss, logits, grad = losses.loss_and_grad(logits_fn, objective, x_adv)
  robust = losses.predicts(logits, y)
  step = 2.0 * jnp.broadcast_to(jnp.asarray(eps, jnp.float32), x.shape[:1])
  flags, windows = checkpoints(steps)
  flags, windows = jnp.asarray(flags), jnp.asarray(windows)
  m = jnp.arange(steps)
  bc = lambda v: projections.per_example(v, x)

  def body(i, c):
    (x_adv, x_old, grad, step, x_best, grad_best, loss_best, x_best_adv,
     robust, loss_steps, loss_best_last, reduced_last) = c
    momentum = x_adv - x_old
    a = jnp.where(i > 0, 0.75, 1.0)
    s = bc(step)
    if norm == 'linf':
      z = _ball_step(x_adv, x, s * jnp.sign(grad), eps, norm)
    else:
      z = _ball_step(x_adv, x, s * projections.normalize(grad, 'l2'), eps,
                     norm)
    x_new = _ball_step(x_adv, x, (z - x_adv) * a + momentum * (1 - a), eps,
                       norm)
    loss, logits, grad = losses.loss_and_grad(logits_fn, objective, x_new)
    pred = losses.predicts(logits, y)
    robust = robust & pred
    x_best_adv = jnp.where(bc(~pred), x_new, x_best_adv)
    loss_steps = loss_steps.at[i].set(loss)
    better = loss > loss_best
    x_best = jnp.where(bc(better), x_new, x_best)
    grad_best = jnp.where(bc(better), grad, grad_best)
    loss_best = jnp.where(better, loss, loss_best)
    # Checkpoint: count loss increases over the last `k` steps (index -1
    # wraps to the last, still-zero, slot as in the reference).
    is_check, k = flags[i], windows[i]
    rises = loss_steps > jnp.roll(loss_steps, 1, axis=0)
    window = ((m <= i) & (m > i - k))[:, None]
    count = jnp.sum(rises & window, axis=0)
    oscillating = count <= k * rho
    stalled = ~reduced_last & (loss_best_last >= loss_best)
    halve = oscillating | stalled
    reduce = is_check & halve
    reduced_last = jnp.where(is_check, halve, reduced_last)
    loss_best_last = jnp.where(is_check, loss_best, loss_best_last)
    step = jnp.where(reduce, step / 2.0, step)
    x_next = jnp.where(bc(reduce), x_best, x_new)
    grad = jnp.where(bc(reduce), grad_best, grad)
    return (x_next, x_adv, grad, step, x_best, grad_best, loss_best,
            x_best_adv, robust, loss_steps, loss_best_last, reduced_last)

  init = (x_adv, x_adv, grad, step, x_adv, grad, loss, x_adv, robust,
          jnp.zeros((steps,) + x.shape[:1], jnp.float32), loss,
          jnp.ones(x.shape[:1], jnp.bool_))
  c = jax.lax.fori_loop(0, steps, body, init)
  return c[7], c[8], c[4], c[6]


def sequential_runs(n_runs: int, run, x, robust, *, mark: int | None = None):
  """Runs ``run(i)`` for i < n_runs while some example is still robust.

  Each run attacks the whole batch (shapes are static) but only examples
  still robust take its result, as AutoAttack attacks only those points.

  Args:
    n_runs: number of runs (restarts x targets).
    run: i -> (adversarial, robust, highest-loss point, its loss).
    x: clean images (the output for examples never attacked).
    robust: [B] bool, examples to attack.
    mark: if given, also return the robust set after the first `mark` runs.

  Returns:
    (images, robust[, robust after `mark` runs]): the first successful
    adversarial per example; for examples that stay robust, the highest-loss
    point seen.
  """
  bc = lambda v: projections.per_example(v, x)

  def body(i, c):
    def attempt(c):
      out, out_loss, robust, marked = c
      adv, still, x_best, loss_best = run(i)
      fooled = robust & ~still
      better = robust & still & (loss_best > out_loss)
      out = jnp.where(bc(fooled), adv, jnp.where(bc(better), x_best, out))
      return (out, jnp.where(better, loss_best, out_loss), robust & still,
              marked)
    c = jax.lax.cond(jnp.any(c[2]), attempt, lambda c: c, c)
    if mark is None:
      return c
    return c[:3] + (jnp.where(i == mark - 1, c[2], c[3]),)

  init = (x, jnp.full(x.shape[:1], -jnp.inf, jnp.float32), robust, robust)
  out, _, robust, marked = jax.lax.fori_loop(0, n_runs, body, init)
  return (out, robust) if mark is None else (out, robust, marked)


def _validate(norm, steps, restarts, rho):
  projections.check_norm(norm, APGD_NORMS)
  check_count('steps', steps, 1)
  check_count('restarts', restarts, 1)
  if not 0.0 < rho < 1.0:
    raise invalid('rho', rho, 'a number in (0, 1)')


def apgd_with_robust(key, logits_fn, x, y, *, eps, norm='linf', steps=100,
                     restarts=1, loss='ce', rho=0.75, robust=None):
  """`apgd` returning (float32 images, robust [B]); `robust` = who to attack."""
  _validate(norm, steps, restarts, rho)
  loss_fn = losses.get_loss(loss)
  if loss == 'dlr' and losses.num_classes(logits_fn, x) < 3:
    raise invalid('loss', loss, "'ce' or 'margin' (DLR needs >= 3 classes)")
  x = x.astype(jnp.float32)
  keys = sampling.example_keys(key, x.shape[0])
  if robust is None:
    robust = losses.predicts(logits_fn(x), y)
  run = lambda i: single_run(
      sampling.fold(keys, i), logits_fn, x, y, lambda z: loss_fn(z, y),
      eps=eps, norm=norm, steps=steps, rho=rho)
  return sequential_runs(restarts, run, x, robust)


def apgd(
    key: jax.Array,
    logits_fn: LogitsFn,
    x: jax.Array,
    y: jax.Array,
    *,
    eps,
    norm: str = 'linf',
    steps: int = 100,
    restarts: int = 1,
    loss: str = 'ce',
    rho: float = 0.75,
) -> jax.Array:
  """Untargeted APGD on the CE ('ce'), DLR ('dlr') or margin loss.

  Args:
    key: PRNG key or per-example keys [B]; restart r uses fold_in(key_i, r).
    logits_fn: images -> logits.
    x: images in [0, 1] [B, ...].
    y: labels [B].
    eps: budget (scalar or [B]); traced.
    norm: 'linf' or 'l2'.
    steps: iterations per restart (AutoAttack: 100).
    restarts: restarts, each only on examples still robust.
    loss: 'ce', 'dlr' or 'margin'.
    rho: oscillation threshold of the step-size rule (0.75).

  Returns:
    Images of `x`'s shape and dtype: adversarials where found; the clean
    image where the model is already wrong; otherwise the highest-loss point.
  """
  out, _ = apgd_with_robust(key, logits_fn, x, y, eps=eps, norm=norm,
                            steps=steps, restarts=restarts, loss=loss, rho=rho)
  return out.astype(x.dtype)


def apgd_ce(key, logits_fn, x, y, *, eps, norm='linf', steps=100,
            restarts=1) -> jax.Array:
  """APGD on the cross-entropy loss (AutoAttack's first attack)."""
  return apgd(key, logits_fn, x, y, eps=eps, norm=norm, steps=steps,
              restarts=restarts, loss='ce')


def target_count(n_target_classes: int, num_classes: int) -> int:
  """Targets actually used: at most num_classes - 1."""
  check_count('n_target_classes', n_target_classes, 1)
  return min(n_target_classes, num_classes - 1)


def _targets(logits_fn, x, y, n_target_classes, robust):
  """(float32 x, number of targets, classes ranked by clean logit, robust)."""
  c = losses.num_classes(logits_fn, x)
  if c < 4:
    raise invalid('num_classes', c, 'at least 4 for the targeted DLR loss')
  n_t = target_count(n_target_classes, c)
  x = x.astype(jnp.float32)
  z0 = logits_fn(x)
  if robust is None:
    robust = losses.predicts(z0, y)
  return x, n_t, jax.lax.top_k(z0.astype(jnp.float32), n_t + 1)[1], robust


def apgd_t_with_robust(key, logits_fn, x, y, *, eps, norm='linf', steps=100,
                       restarts=1, n_target_classes=9, rho=0.75, robust=None):
  """`apgd_t` returning (float32 images, robust [B])."""
  _validate(norm, steps, restarts, rho)
  x, n_t, ranked, robust = _targets(logits_fn, x, y, n_target_classes,
                                    robust)
  keys = sampling.example_keys(key, x.shape[0])

  def run(i):
    target = jax.lax.dynamic_index_in_dim(ranked, i // restarts + 1, axis=1,
                                          keepdims=False)
    objective = lambda z: losses.dlr_targeted(z, y, target)
    return single_run(sampling.fold(keys, i), logits_fn, x, y, objective,
                      eps=eps, norm=norm, steps=steps, rho=rho)

  return sequential_runs(n_t * restarts, run, x, robust)


def apgd_t(
    key: jax.Array,
    logits_fn: LogitsFn,
    x: jax.Array,
    y: jax.Array,
    *,
    eps,
    norm: str = 'linf',
    steps: int = 100,
    restarts: int = 1,
    n_target_classes: int = 9,
    rho: float = 0.75,
) -> jax.Array:
  """APGD-T: APGD on the targeted DLR loss against the top-k other classes.

  Target j (j = 1..k, k = min(n_target_classes, num_classes - 1)) is the
  class with the (j+1)-th largest clean logit; targets run in that order,
  each with `restarts` restarts, each only on examples still robust. Run
  i = (j - 1) * restarts + r uses fold_in(key_i, i). Needs >= 4 classes.

  Returns:
    Images of `x`'s shape and dtype (see `apgd`).
  """
  out, _ = apgd_t_with_robust(
      key, logits_fn, x, y, eps=eps, norm=norm, steps=steps,
      restarts=restarts, n_target_classes=n_target_classes, rho=rho)
  return out.astype(x.dtype)


def apgd_ce_then_t(key_ce, key_t, logits_fn, x, y, *, eps, norm='linf',
                   steps=100, restarts_ce=1, restarts_t=1, n_target_classes=9,
                   rho=0.75, robust=None):
  """APGD-CE then APGD-T as one loop over runs, so one compiled body.

  Gives the same result as `apgd_with_robust` (key `key_ce`) followed by
  `apgd_t_with_robust` (key `key_t`) on the examples still robust, at about
  half the compile time: every run evaluates both losses on the same logits
  and keeps the one of its stage.

  Returns:
    (float32 images, robust after APGD-CE [B], robust after APGD-T [B]).
  """
  _validate(norm, steps, restarts_ce, rho)
  check_count('restarts_t', restarts_t, 1)
  x, n_t, ranked, robust = _targets(logits_fn, x, y, n_target_classes,
                                    robust)
  keys_ce = sampling.example_keys(key_ce, x.shape[0])
  keys_t = sampling.example_keys(key_t, x.shape[0])

  def run(i):
    is_ce = i < restarts_ce
    j = jnp.maximum(i - restarts_ce, 0)
    target = jax.lax.dynamic_index_in_dim(ranked, j // restarts_t + 1, axis=1,
                                          keepdims=False)
    run_keys = jax.lax.cond(is_ce, lambda: sampling.fold(keys_ce, i),
                            lambda: sampling.fold(keys_t, j))
    objective = lambda z: jnp.where(is_ce, losses.cross_entropy(z, y),
                                    losses.dlr_targeted(z, y, target))
    return single_run(run_keys, logits_fn, x, y, objective, eps=eps,
                      norm=norm, steps=steps, rho=rho)

  out, robust_t, robust_ce = sequential_runs(
      restarts_ce + n_t * restarts_t, run, x, robust, mark=restarts_ce)
  return out, robust_ce, robust_t
