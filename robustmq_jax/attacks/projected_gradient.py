"""FGSM and projected gradient descent (L-inf, L2, L1), compiled.

The step loop is one `lax.fori_loop`, so a call compiles once per input
shape and static setting (norm, steps, restarts, loss, flags); `eps` and
`step_size` are traced values, so an epsilon sweep (for instance under
`jax.vmap`) reuses the compiled program. `pgd` also takes `steps` and
`random_start` as traced values: one program then serves FGSM (one step
of size eps from the clean image) and PGD-k alike.
"""

from typing import Callable

import jax
import jax.numpy as jnp

from robustmq_jax.attacks import losses
from robustmq_jax.attacks import projections
from robustmq_jax.attacks import sampling
from robustmq_jax.errors import invalid

LogitsFn = Callable[[jax.Array], jax.Array]


def _objective(loss: str, y: jax.Array, targeted: bool):
  """logits -> per-example value to maximise, and the success test."""
  fn = losses.get_loss(loss)
  if targeted:
    return (lambda z: -fn(z, y)), (lambda z: losses.predicts(z, y))
  return (lambda z: fn(z, y)), (lambda z: ~losses.predicts(z, y))


def check_count(field: str, value, minimum: int) -> int:
  if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
    raise invalid(field, value, f'an integer >= {minimum}')
  return value


def fgsm(
    logits_fn: LogitsFn,
    x: jax.Array,
    y: jax.Array,
    *,
    eps,
    loss: str = 'ce',
    targeted: bool = False,
) -> jax.Array:
  """Fast gradient sign method (Goodfellow et al., 2015), deterministic.

  ``clip(x + eps * sign(grad_x loss), 0, 1)``, as torchattacks' FGSM.

  Args:
    logits_fn: images -> logits; any JAX function.
    x: images in [0, 1], [B, H, W, C] (any trailing shape works).
    y: int labels [B] (target classes if `targeted`).
    eps: L-inf budget, a scalar or per-example [B]; traced.
    loss: 'ce', 'margin' or 'dlr'.
    targeted: descend the loss of `y` instead of ascending it.

  Returns:
    Adversarial images with the shape and dtype of `x`.
  """
  dtype = x.dtype
  x = x.astype(jnp.float32)
  objective, _ = _objective(loss, y, targeted)
  _, _, grad = losses.loss_and_grad(logits_fn, objective, x)
  e = projections.per_example(eps, x)
  return jnp.clip(x + e * jnp.sign(grad), 0.0, 1.0).astype(dtype)


def pgd(
    key: jax.Array,
    logits_fn: LogitsFn,
    x: jax.Array,
    y: jax.Array,
    *,
    eps,
    step_size,
    steps: int,
    norm: str = 'linf',
    restarts: int = 1,
    random_start: bool = True,
    loss: str = 'ce',
    targeted: bool = False,
    return_best: bool = True,
    unroll: int | bool = 1,
) -> jax.Array:
  """Projected gradient descent (Madry et al., 2018) with random restarts.

  Each step moves along `projections.ascent_direction` (sign for L-inf,
  L2-normalised gradient for L2, L1-normalised for L1), projects onto the
  eps-ball around `x` and clips to [0, 1].

  Args:
    key: PRNG key, or one key per example ([B]); see `sampling`.
    logits_fn: images -> logits.
    x: images in [0, 1], [B, ...].
    y: int labels [B] (target classes if `targeted`).
    eps: budget, scalar or [B]; traced.
    step_size: step length in the norm's units, scalar or [B]; traced.
    steps: number of gradient steps: a Python int (static), or a traced
      integer scalar (the loop becomes a `lax.while_loop`; `unroll` must
      then be 1).
    norm: 'linf', 'l2' or 'l1'.
    restarts: random restarts (static); restart r uses
      ``fold_in(example_key, r)``. Later restarts are skipped at run time
      once every example of the batch is fooled.
    random_start: start from a random point of the ball
      (`sampling.random_start`), else from `x`; a bool or a traced bool.
    loss: 'ce', 'margin' or 'dlr'.
    targeted: make the model predict `y` instead of leaving it.
    return_best: if True, every example keeps the first iterate that fools
      the model (so robust accuracy can only fall as `steps` grows; costs one
      extra forward pass); if False, the last iterate, as in Madry et al.
      and torchattacks (the usual choice for adversarial training).
    unroll: passed to `lax.fori_loop`. Not needed for speed: on CPU the
      step's convolutions are emitted in the layout of XLA's fast kernels
      (`conv_layout`), so the rolled loop costs what `steps` jitted
      value-and-grad calls cost; ``unroll=True`` only adds compile time
      that grows with `steps`.

  Returns:
    Adversarial images with the shape and dtype of `x`. With several
    restarts: the first restart that fools the model, else the one with the
    largest final loss.
  """
  projections.check_norm(norm)
  if isinstance(steps, jax.Array) and not isinstance(steps, jax.core.Tracer):
    # A concrete array is checked like an int (a traced one cannot be).
    if steps.ndim or not jnp.issubdtype(steps.dtype, jnp.integer):
      raise invalid('steps', steps, 'an integer scalar')
    check_count('steps', int(steps), 0)
  elif not isinstance(steps, jax.Array):
    check_count('steps', steps, 0)
  check_count('restarts', restarts, 1)
  dtype = x.dtype
  x = x.astype(jnp.float32)
  keys = sampling.example_keys(key, x.shape[0])
  objective, success = _objective(loss, y, targeted)
  step = projections.per_example(step_size, x)
  final_eval = return_best or restarts > 1

  def run(run_keys):
    if isinstance(random_start, jax.Array):
      delta = jnp.where(random_start,
                        sampling.random_start(run_keys, x, eps, norm), 0.0)
    elif random_start:
      delta = sampling.random_start(run_keys, x, eps, norm)
    else:
      delta = jnp.zeros_like(x)
    x_adv = projections.clip_to_ball_and_box(x + delta, x, eps, norm)
    hit = jnp.zeros(x.shape[:1], jnp.bool_)

    def body(_, carry):
      x_adv, best, hit = carry
      _, logits, grad = losses.loss_and_grad(logits_fn, objective, x_adv)
      if return_best:
        ok = success(logits)
        best = jnp.where(projections.per_example(ok & ~hit, x), x_adv, best)
        hit = hit | ok
      x_adv = projections.clip_to_ball_and_box(
          x_adv + step * projections.ascent_direction(grad, norm), x, eps,
          norm)
      return x_adv, best, hit

    x_adv, best, hit = jax.lax.fori_loop(0, steps, body, (x_adv, x_adv, hit),
                                         unroll=unroll)
    if not final_eval:
      return x_adv, hit, jnp.zeros(x.shape[:1])
    logits = logits_fn(x_adv)
    value = objective(logits)
    if return_best:
      best = jnp.where(projections.per_example(hit, x), best, x_adv)
    else:
      best = x_adv
    return best, hit | success(logits), value

  out, hit, value = run(sampling.fold(keys, 0))
  if restarts > 1:

    def restart(r, carry):
      def attempt(carry):
        out, hit, value = carry
        out2, hit2, value2 = run(sampling.fold(keys, r))
        take = ~hit & (hit2 | (value2 > value))
        return (jnp.where(projections.per_example(take, x), out2, out),
                hit | hit2, jnp.where(take, value2, value))
      return jax.lax.cond(jnp.all(carry[1]), lambda c: c, attempt, carry)

    out, hit, value = jax.lax.fori_loop(1, restarts, restart,
                                        (out, hit, value))
  return out.astype(dtype)
