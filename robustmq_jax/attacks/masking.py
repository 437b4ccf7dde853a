"""Cheap gradient-masking checks (REFERENCE 6.4), run with every attack.

A model that resists its own gradients better than transferred or
gradient-free attacks is masking gradients, not robust (Athalye et al.,
2018; Carlini et al., 2019). Quantized models are prone to it: fake-quant
rounding has zero derivative unless a straight-through estimator replaces it.
"""

from typing import Callable

import jax
import jax.numpy as jnp

from robustmq_jax.attacks import losses
from robustmq_jax.attacks import projections

LogitsFn = Callable[[jax.Array], jax.Array]

# White-box accuracy may exceed transfer or black-box accuracy by at most
# this much (a fraction, paired on the same examples) before the row is
# flagged: two percentage points, above the paired noise of a few thousand
# examples and small enough to catch the masking the check exists for.
MASKING_MARGIN = 0.02
# AutoAttack's own rule (checks.check_square_sr): Square lowering the robust
# accuracy of the white-box stages by more than 0.2 points.
SQUARE_MARGIN = 0.002


def input_gradient(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *,
                   loss: str = 'margin') -> jax.Array:
  """Per-example input gradient of `loss` (DLR falls back to CE below 3
  classes)."""
  if loss == 'dlr' and losses.num_classes(logits_fn, x) < 3:
    loss = 'ce'
  fn = losses.get_loss(loss)
  _, _, grad = losses.loss_and_grad(
      logits_fn, lambda z: fn(z, y), x.astype(jnp.float32))
  return grad


def zero_gradient(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *,
                  loss: str = 'margin') -> jax.Array:
  """AutoAttack's check: True where sum |grad_x loss| is exactly 0.

  AutoAttack applies it to the DLR loss, whose gradient (unlike that of a
  saturated cross-entropy) does not underflow. DLR is however constant, so
  its gradient exactly zero, wherever the label ranks third; the default
  here is the margin z_other - z_y, which has neither problem, so a zero
  points at the model itself, e.g. quantizers without a straight-through
  gradient.
  """
  g = input_gradient(logits_fn, x, y, loss=loss)
  return projections.lp_norm(g, 'l1') == 0


def gradient_cosine(logits_fn_a: LogitsFn, logits_fn_b: LogitsFn,
                    x: jax.Array, y: jax.Array, *,
                    loss: str = 'ce') -> jax.Array:
  """Cosine between two models' input gradients (e.g. STE twin vs float)."""
  ga = projections.flat(input_gradient(logits_fn_a, x, y, loss=loss))
  gb = projections.flat(input_gradient(logits_fn_b, x, y, loss=loss))
  num = jnp.sum(ga * gb, axis=1)
  den = jnp.linalg.norm(ga, axis=1) * jnp.linalg.norm(gb, axis=1)
  return num / jnp.maximum(den, 1e-30)


def masking_flag(white_box_accuracy: float, *,
                 transfer_accuracy: float | None = None,
                 black_box_accuracy: float | None = None,
                 margin: float = MASKING_MARGIN) -> bool:
  """True when gradients look masked.

  Args:
    white_box_accuracy: accuracy under the model's own-gradient attack.
    transfer_accuracy: accuracy under the same attack crafted on another
      model (the float twin), or None.
    black_box_accuracy: accuracy under a gradient-free attack at the same
      budget (Square), or None.
    margin: tolerated excess (fraction).

  Returns:
    Whether white-box accuracy exceeds a transfer or black-box accuracy by
    more than `margin`: the other attack found adversarials the gradients
    missed.
  """
  others = [a for a in (transfer_accuracy, black_box_accuracy)
            if a is not None]
  return any(white_box_accuracy > a + margin for a in others)
