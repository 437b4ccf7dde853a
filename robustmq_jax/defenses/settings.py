"""Defense methods as quantization methods: names, config and validation.

A precision may carry a method suffix (its grammar: `robustmq_jax.precision`),
so one run compares methods at the same bits: ``'w4a4'`` uses
``config.quant.method``; ``'w4a4:lsq'`` names a quantization method
explicitly; ``'w4a4:dq'`` and ``'w4a4:laaq'`` are the defenses;
``'fp32:adv'`` is the PGD adversarially fine-tuned float model (LAAQ's
starting point) and ``'w4a4:adv_ptq'`` its plain post-training quantization
(LAAQ's "uniform" baseline). Their hyper-parameters live in
``config.quant.dq``, ``config.quant.laaq`` and ``config.quant.adv``.
"""

from typing import Any

import ml_collections

from robustmq_jax import precision as precision_lib
from robustmq_jax import training
from robustmq_jax.defenses.adversarial_training import AdvSettings
from robustmq_jax.defenses.laaq import LIPSCHITZ_MODES
from robustmq_jax.defenses.laaq import PROPAGATIONS
from robustmq_jax.defenses.laaq import Settings as LaaqSettings
from robustmq_jax.defenses.orthogonality import FORMS
from robustmq_jax.errors import invalid
from robustmq_jax.quant import spec as spec_lib

METHODS = precision_lib.DEFENSE_METHODS
FLOAT_ONLY = precision_lib.FLOAT_ONLY
SEPARATOR = precision_lib.SEPARATOR


def default_config() -> ml_collections.ConfigDict:
  """Defaults of ``config.quant.{dq, laaq, adv}``.

  Fields:
    dq.beta: weight of the orthogonality penalty (the paper uses 3e-4 and
      6e-4).
    dq.form: Gram matrix form, 'auto' (the smaller one), 'wtw' or 'wwt'
      (see `orthogonality`).
    dq.base_method: the QAT method DQ trains with ('lsq', 'pact',
      'dorefa'); vanilla QAT with the same method and recipe
      (``config.quant.qat``) is its baseline.
    laaq.*: see `laaq.Settings` (candidate fractions, eps, lipschitz,
      propagation, iters, fold_bn); laaq.num_batches x laaq.batch_size
      calibration images are analysed.
    adv.*: PGD adversarial fine-tuning of the float model (eps, step_size,
      attack steps, norm, fraction of each batch attacked) and its schedule (train_steps, batch_size,
      learning_rate, warmup_steps, weight_decay, pad_crop).
  """
  l = LaaqSettings()
  a = AdvSettings()
  return ml_collections.ConfigDict({
      'dq': {'beta': 3e-4, 'form': 'auto', 'base_method': 'lsq'},
      'laaq': {'w_fracs': l.w_fracs, 'a_fracs': l.a_fracs, 'eps': l.eps,
               'lipschitz': l.lipschitz, 'propagation': l.propagation,
               'iters': l.iters, 'fold_bn': l.fold_bn, 'num_batches': 4,
               'batch_size': 64},
      'adv': {'eps': a.eps, 'step_size': a.step_size, 'steps': a.steps,
              'norm': a.norm, 'fraction': a.fraction,
              'train_steps': a.recipe.steps,
              'batch_size': a.recipe.batch_size,
              'learning_rate': a.recipe.learning_rate,
              'warmup_steps': a.recipe.warmup_steps,
              'weight_decay': a.recipe.weight_decay,
              'pad_crop': a.recipe.pad_crop},
  })


# The precision grammar lives in robustmq_jax/precision.py (shared by the
# settings and the runner); these names stay for the defenses' callers.
split_precision = precision_lib.split
validate_precision = precision_lib.validate
method_of = precision_lib.method_of


def has_method(precision: str) -> bool:
  """True when the precision names its method ('w4a4:dq', 'w4a4:lsq')."""
  return split_precision(precision)[1] is not None


def _section(qconfig, name):
  defaults = default_config()[name]
  given = (qconfig or {}).get(name) if hasattr(qconfig or {}, 'get') else None
  if given is None:
    return defaults
  for k in given.keys():
    if k not in defaults:
      raise invalid(f'config.quant.{name}', k, sorted(defaults.keys()))
  out = ml_collections.ConfigDict(defaults.to_dict())
  for k, v in given.items():
    out[k] = v
  return out


def _num(c, section, key, lo, hi, integer=False):
  v = c[key]
  ok = (not isinstance(v, bool) and isinstance(v, int if integer else
                                                 (int, float)) and lo <= v <= hi)
  if not ok:
    kind = 'an integer' if integer else 'a number'
    raise invalid(f'config.quant.{section}.{key}', v, f'{kind} in [{lo}, {hi}]')
  return int(v) if integer else float(v)


def _fracs(c, section, key):
  v = c[key]
  ok = (isinstance(v, (tuple, list)) and v and all(
      isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f <= 1
      for f in v))
  if not ok:
    raise invalid(f'config.quant.{section}.{key}', v,
                  'a non-empty tuple of fractions in (0, 1]')
  return tuple(sorted({float(f) for f in v} | {1.0}, reverse=True))


def dq_settings(qconfig) -> dict[str, Any]:
  c = _section(qconfig, 'dq')
  if c.form not in FORMS:
    raise invalid('config.quant.dq.form', c.form, FORMS)
  if c.base_method not in spec_lib.QAT_METHODS:
    raise invalid('config.quant.dq.base_method', c.base_method,
                  spec_lib.QAT_METHODS)
  return {'beta': _num(c, 'dq', 'beta', 0.0, 1.0), 'form': c.form,
          'base_method': c.base_method}


def laaq_settings(qconfig) -> tuple[LaaqSettings, int, int]:
  """(Settings, num_batches, batch_size) of ``config.quant.laaq``."""
  c = _section(qconfig, 'laaq')
  if c.lipschitz not in LIPSCHITZ_MODES:
    raise invalid('config.quant.laaq.lipschitz', c.lipschitz,
                  LIPSCHITZ_MODES)
  if c.propagation not in PROPAGATIONS:
    raise invalid('config.quant.laaq.propagation', c.propagation,
                  PROPAGATIONS)
  if not isinstance(c.fold_bn, bool):
    raise invalid('config.quant.laaq.fold_bn', c.fold_bn, (True, False))
  s = LaaqSettings(
      w_fracs=_fracs(c, 'laaq', 'w_fracs'),
      a_fracs=_fracs(c, 'laaq', 'a_fracs'),
      eps=_num(c, 'laaq', 'eps', 0.0, 1.0), lipschitz=c.lipschitz,
      propagation=c.propagation,
      iters=_num(c, 'laaq', 'iters', 1, 10_000, integer=True),
      fold_bn=c.fold_bn)
  return (s, _num(c, 'laaq', 'num_batches', 1, 1000, integer=True),
          _num(c, 'laaq', 'batch_size', 1, 100_000, integer=True))


def adv_settings(qconfig) -> AdvSettings:
  c = _section(qconfig, 'adv')
  if c.norm not in ('linf', 'l2'):
    raise invalid('config.quant.adv.norm', c.norm, ('linf', 'l2'))
  recipe = training.Recipe(
      steps=_num(c, 'adv', 'train_steps', 0, 10**7, integer=True),
      batch_size=_num(c, 'adv', 'batch_size', 1, 10**6, integer=True),
      learning_rate=_num(c, 'adv', 'learning_rate', 0.0, 10.0),
      warmup_steps=_num(c, 'adv', 'warmup_steps', 0, 10**7, integer=True),
      weight_decay=_num(c, 'adv', 'weight_decay', 0.0, 1.0),
      pad_crop=_num(c, 'adv', 'pad_crop', 0, 64, integer=True))
  return AdvSettings(
      eps=_num(c, 'adv', 'eps', 0.0, 1.0),
      step_size=_num(c, 'adv', 'step_size', 0.0, 1.0),
      steps=_num(c, 'adv', 'steps', 1, 1000, integer=True), norm=c.norm,
      fraction=_num(c, 'adv', 'fraction', 1e-6, 1.0), recipe=recipe)


def validate_config(qconfig) -> None:
  """UserError naming the first bad field of config.quant.{dq,laaq,adv}."""
  dq_settings(qconfig)
  laaq_settings(qconfig)
  adv_settings(qconfig)
