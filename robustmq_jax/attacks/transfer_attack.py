"""Transfer attacks: craft on a source model, evaluate on a target model.

The usual source is the float model and the target its quantized version:
if the target resists its own gradients far better than the float model's
adversarials, its gradients are masked (`masking`).
"""

import functools
from typing import Any, Callable, NamedTuple

import jax

from robustmq_jax.attacks import autopgd as apgd_lib
from robustmq_jax.attacks import ensemble as autoattack_lib
from robustmq_jax.attacks import fab_attack as fab_lib
from robustmq_jax.attacks import losses
from robustmq_jax.attacks import projected_gradient as pgd_lib
from robustmq_jax.attacks import square_attack as square_lib
from robustmq_jax.errors import invalid

LogitsFn = Callable[[jax.Array], jax.Array]

# Attacks with the key-first signature attack(key, logits_fn, x, y, **kw).
KEYED_ATTACKS = {
    'pgd': pgd_lib.pgd,
    'apgd': apgd_lib.apgd,
    'apgd_ce': apgd_lib.apgd_ce,
    'apgd_t': apgd_lib.apgd_t,
    'fab': fab_lib.fab,
    'fab_t': fab_lib.fab_t,
    'square': square_lib.square,
    'autoattack': autoattack_lib.autoattack,
}


class TransferResult(NamedTuple):
  """Adversarials from the source and whether each model still is right."""
  images: jax.Array
  source_correct: jax.Array
  target_correct: jax.Array


def resolve(attack: str | Callable[..., jax.Array]) -> Callable[..., Any]:
  """A key-first attack from its name ('fgsm' ignores the key) or itself."""
  if callable(attack):
    return attack
  if attack == 'fgsm':
    return lambda key, f, x, y, **kw: pgd_lib.fgsm(f, x, y, **kw)
  if attack not in KEYED_ATTACKS:
    raise invalid('attack', attack, ['fgsm'] + sorted(KEYED_ATTACKS))
  return KEYED_ATTACKS[attack]


def transfer(
    key: jax.Array,
    source_logits_fn: LogitsFn,
    target_logits_fn: LogitsFn,
    x: jax.Array,
    y: jax.Array,
    *,
    attack: str | Callable[..., jax.Array] = 'pgd',
    **attack_kwargs,
) -> TransferResult:
  """Crafts adversarials on `source_logits_fn` and scores both models.

  Args:
    key: PRNG key or per-example keys [B], passed to the attack.
    source_logits_fn: the model attacked (white-box).
    target_logits_fn: the model evaluated on the source's adversarials
      (never differentiated).
    x: images in [0, 1].
    y: labels [B].
    attack: an attack name ('fgsm', 'pgd', 'apgd_ce', ...) or a key-first
      attack function.
    **attack_kwargs: the attack's settings (eps, step_size, steps, ...).

  Returns:
    `TransferResult` (images, source_correct [B], target_correct [B]).
  """
  craft = functools.partial(resolve(attack), **attack_kwargs)
  images = craft(key, source_logits_fn, x, y)
  return TransferResult(
      images,
      losses.predicts(source_logits_fn(images), y),
      losses.predicts(target_logits_fn(images), y))
