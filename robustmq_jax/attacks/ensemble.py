"""AutoAttack (Croce & Hein, ICML 2020): the parameter-free attack ensemble.

``version='standard'`` runs, as fra31/auto-attack does, APGD-CE (1 restart,
100 steps) -> APGD-T (9 targets, 100 steps) -> FAB-T (9 targets, 100 steps)
-> Square (5000 queries), each only on the points the previous ones did not
break; the robust accuracy is the fraction never broken. ``'plus'`` adds
APGD-DLR and untargeted FAB with 5 restarts each (untargeted FAB needs the
full class Jacobian: only for few classes).

Shapes are static, so every stage runs on the whole batch but only examples
still robust take its result, and a stage (each restart or target of it) is
skipped at run time when no example of the batch is left; a batch that a
standard model cannot defend therefore costs about one APGD-CE run. One
compile per input shape and settings; `eps` is traced.
"""

from typing import Callable

import jax
import jax.numpy as jnp

from robustmq_jax.attacks import autopgd as apgd_lib
from robustmq_jax.attacks import fab_attack as fab_lib
from robustmq_jax.attacks import losses
from robustmq_jax.attacks import projections
from robustmq_jax.attacks import sampling
from robustmq_jax.attacks import square_attack as square_lib
from robustmq_jax.errors import invalid

LogitsFn = Callable[[jax.Array], jax.Array]
VERSIONS = ('standard', 'plus')
AUTOATTACK_NORMS = ('linf', 'l2')


def stages(version: str, *, steps: int = 100, n_target_classes: int = 9,
           n_queries: int = 5000) -> list[tuple[str, Callable, dict]]:
  """The ordered (name, attack, settings) list of an AutoAttack version."""
  apgd_t = (apgd_lib.apgd_t_with_robust,
            dict(steps=steps, restarts=1, n_target_classes=n_target_classes))
  fab_t = (fab_lib.fab_with_robust,
           dict(steps=steps, restarts=1, targeted=True,
                n_target_classes=n_target_classes))
  sq = (square_lib.square_with_robust,
        dict(n_queries=n_queries, restarts=1))
  if version == 'standard':
    return [('apgd-ce', apgd_lib.apgd_with_robust,
             dict(steps=steps, restarts=1, loss='ce')),
            ('apgd-t',) + apgd_t, ('fab-t',) + fab_t, ('square',) + sq]
  if version == 'plus':
    return [('apgd-ce', apgd_lib.apgd_with_robust,
             dict(steps=steps, restarts=5, loss='ce')),
            ('apgd-dlr', apgd_lib.apgd_with_robust,
             dict(steps=steps, restarts=5, loss='dlr')),
            ('fab', fab_lib.fab_with_robust,
             dict(steps=steps, restarts=5, targeted=False)),
            ('square',) + sq, ('apgd-t',) + apgd_t, ('fab-t',) + fab_t]
  raise invalid('version', version, VERSIONS)


def autoattack(
    key: jax.Array,
    logits_fn: LogitsFn,
    x: jax.Array,
    y: jax.Array,
    *,
    eps,
    norm: str = 'linf',
    version: str = 'standard',
    steps: int = 100,
    n_target_classes: int = 9,
    n_queries: int = 5000,
    return_stages: bool = False,
    attack_mask: jax.Array | None = None,
):
  """AutoAttack on a batch.

  Args:
    key: PRNG key or per-example keys [B]; stage s uses fold_in(key_i, s).
    logits_fn: images -> logits (white-box: differentiated by the gradient
      stages; Square only evaluates it).
    x: NHWC images in [0, 1].
    y: labels [B].
    eps: budget (scalar or [B]); traced.
    norm: 'linf' or 'l2'.
    version: 'standard' or 'plus'.
    steps: APGD / FAB iterations (reference: 100; lower only to save time,
      and say so).
    n_target_classes: targets of APGD-T and FAB-T (9; capped at classes-1).
    n_queries: Square's query budget (5000).
    return_stages: also return {stage name: robust [B] after that stage}.
    attack_mask: optional [B] bool; examples outside it are not attacked
      (e.g. padding rows, which would otherwise keep stages running).

  Returns:
    Images of `x`'s shape and dtype (adversarial where any stage succeeded),
    or (images, stages) with `return_stages`.
  """
  projections.check_norm(norm, AUTOATTACK_NORMS)
  plan = stages(version, steps=steps, n_target_classes=n_target_classes,
                n_queries=n_queries)
  dtype = x.dtype
  x = x.astype(jnp.float32)
  keys = sampling.example_keys(key, x.shape[0])
  robust = losses.predicts(logits_fn(x), y)
  if attack_mask is not None:
    robust = robust & attack_mask
  out = x
  after = {}
  first = 0
  if [p[0] for p in plan[:2]] == ['apgd-ce', 'apgd-t']:
    # One compiled loop for both APGD stages (same result, less compile).
    out, after['apgd-ce'], robust = apgd_lib.apgd_ce_then_t(
        sampling.fold(keys, 0), sampling.fold(keys, 1), logits_fn, x, y,
        eps=eps, norm=norm, steps=steps, restarts_ce=plan[0][2]['restarts'],
        restarts_t=plan[1][2]['restarts'],
        n_target_classes=n_target_classes, robust=robust)
    after['apgd-t'] = robust
    first = 2
  for s, (name, attack, settings) in list(enumerate(plan))[first:]:
    adv, still = attack(sampling.fold(keys, s), logits_fn, x, y, eps=eps,
                        norm=norm, robust=robust, **settings)
    fooled = robust & ~still
    out = jnp.where(projections.per_example(fooled, x), adv, out)
    robust = robust & still
    after[name] = robust
  out = out.astype(dtype)
  return (out, after) if return_stages else out
