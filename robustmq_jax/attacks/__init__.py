"""Adversarial attacks as pure, compiled JAX functions.

Every attack takes ``logits_fn`` (any JAX function images -> logits), images
in [0, 1] and integer labels, and returns adversarial images of the input's
shape and dtype. Randomised attacks are key-first; budgets and step sizes are
traced, so they compose with `jax.jit`, `jax.vmap` (e.g. over epsilons),
`jax.grad`-free sharded evaluation, and your own training step::

  x_adv = attacks.pgd(key, lambda x: model.apply(params, x), x, y,
                      eps=8 / 255, step_size=2 / 255, steps=10)
"""

from robustmq_jax.attacks.autopgd import apgd
from robustmq_jax.attacks.autopgd import apgd_ce
from robustmq_jax.attacks.autopgd import apgd_t
from robustmq_jax.attacks.ensemble import autoattack
from robustmq_jax.attacks.fab_attack import fab
from robustmq_jax.attacks.fab_attack import fab_t
from robustmq_jax.attacks.losses import cross_entropy
from robustmq_jax.attacks.losses import dlr
from robustmq_jax.attacks.losses import dlr_targeted
from robustmq_jax.attacks.losses import margin
from robustmq_jax.attacks.masking import gradient_cosine
from robustmq_jax.attacks.masking import masking_flag
from robustmq_jax.attacks.masking import zero_gradient
from robustmq_jax.attacks.projected_gradient import fgsm
from robustmq_jax.attacks.projected_gradient import pgd
from robustmq_jax.attacks.projections import lp_norm
from robustmq_jax.attacks.projections import project_ball
from robustmq_jax.attacks.square_attack import square
from robustmq_jax.attacks.transfer_attack import transfer
from robustmq_jax.attacks.transfer_attack import TransferResult

__all__ = [
    'apgd', 'apgd_ce', 'apgd_t', 'autoattack', 'fab', 'fab_t', 'fgsm', 'pgd',
    'square', 'transfer', 'TransferResult', 'zero_gradient',
    'gradient_cosine', 'masking_flag', 'cross_entropy', 'dlr',
    'dlr_targeted', 'margin', 'lp_norm', 'project_ball',
]
