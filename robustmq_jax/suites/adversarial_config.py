"""Configuration of the adversarial suite: families, defaults, validation.

See `robustmq_jax.suites.adversarial` for the meaning of every field.
"""

import jax
import ml_collections

from robustmq_jax import config_fields
from robustmq_jax.attacks import ensemble
from robustmq_jax.attacks import masking
from robustmq_jax.errors import invalid

FAMILIES = ('fgsm', 'pgd_linf', 'pgd_l2', 'pgd_l1', 'apgd_ce', 'autoattack',
            'square')
# The grid of the ImageNet defaults (and of the sample's 'sample_full').
STANDARD_ATTACKS = ('fgsm', 'pgd_linf', 'pgd_l2', 'pgd_l1', 'autoattack',
                    'square')
WHITE_BOX = ('fgsm', 'pgd_linf', 'pgd_l2', 'pgd_l1', 'apgd_ce')
NORM = {'fgsm': 'linf', 'pgd_linf': 'linf', 'pgd_l2': 'l2', 'pgd_l1': 'l1',
         'apgd_ce': 'linf', 'autoattack': 'linf', 'square': 'linf'}


def default_config(image_size: int = 224) -> ml_collections.ConfigDict:
  """Defaults for ImageNet (image_size >= 64) or the 32x32 sample.

  ImageNet: L-inf {0.5, 1, 2, 4}/255 with FGSM and PGD-20 (step eps/4);
  AutoAttack-standard at 4/255 (reference budgets) and Square at the same
  eps, on a fixed 5000-image subset (RobustBench); L2 up to 8.0 and L1 up to
  1600 with 20 steps of 3/40 eps (RobustART's foolbox / IBM ART settings,
  REFERENCE 1.5).

  Sample (32x32): budgets cut so the quickstart fits 5 minutes on a 2-core
  CPU: FGSM and PGD-10 (with transfer from the float model) at L-inf
  {0.5, 1, 2, 4}/255 on 64 examples (the sample models lose most accuracy by
  2/255). AutoAttack (1/255, 32 examples, 10 iterations, 3 targets, 100
  Square queries instead of the reference 100 / 9 / 5000, recorded in each
  row's params), Square, L2 {0.1, 0.25} and L1 {3, 6} are defined but only
  in `attacks` of the 'sample_full' study variant: each costs a compile of
  20-40 s per quantized model on a 2-core CPU.
  """
  c = ml_collections.ConfigDict()
  sample = image_size < 64
  c.attacks = STANDARD_ATTACKS
  c.linf_eps_255 = (0.5, 1.0, 2.0, 4.0)
  c.step_ratio = ml_collections.ConfigDict(
      {'linf': 0.25, 'l2': 3 / 40, 'l1': 3 / 40})
  c.pgd_restarts = 1
  c.apgd_steps = 100
  c.autoattack_version = 'standard'
  c.transfer = True
  c.masking_margin = masking.MASKING_MARGIN
  c.batch_size = 0
  if sample:
    c.attacks = ('fgsm', 'pgd_linf')
    c.l2_eps = (0.1, 0.25)
    c.l1_eps = (3.0, 6.0)
    c.pgd_steps = 10
    c.num_examples = 64
    c.autoattack_eps_255 = 1.0
    c.autoattack_steps = 10
    c.autoattack_targets = 3
    c.autoattack_queries = 100
    c.square_queries = 100
    c.autoattack_num_examples = 32
  else:
    c.l2_eps = (2.0, 4.0, 8.0)
    c.l1_eps = (400.0, 800.0, 1600.0)
    c.pgd_steps = 20
    c.num_examples = 5000
    c.autoattack_eps_255 = 4.0
    c.autoattack_steps = 100
    c.autoattack_targets = 9
    c.autoattack_queries = 5000
    c.square_queries = 5000
    c.autoattack_num_examples = 5000
  return c


def _field(name: str) -> str:
  return f'config.adversarial.{name}'


def _check_positive_tuple(cfg, name):
  v = cfg.get(name)
  ok = isinstance(v, (tuple, list)) and all(
      isinstance(e, (int, float)) and not isinstance(e, bool) and e > 0
      for e in v)
  if not ok:
    raise invalid(_field(name), v, 'a tuple of positive numbers')


def _check_int(cfg, name, minimum):
  v = cfg.get(name)
  if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
    raise invalid(_field(name), v, f'an integer >= {minimum}')


def families(cfg) -> list[str]:
  names = config_fields.parse_list(cfg.get('attacks') or (),
                                   _field('attacks'), str)
  for n in names:
    if n not in FAMILIES:
      raise invalid(_field('attacks'), n, FAMILIES)
  return names


class Settings:
  """Validated `config.adversarial` merged over the defaults."""

  def __init__(self, config: ml_collections.ConfigDict, image_size: int):
    cfg = default_config(image_size)
    given = config.get('adversarial')
    if given is not None and not isinstance(given, (dict,
                                                      ml_collections.ConfigDict)):
      raise invalid('config.adversarial', given, 'a ConfigDict')
    for k, v in (given or {}).items():
      if k not in cfg:
        raise invalid('config.adversarial', k, sorted(cfg.keys()))
      cfg[k] = v
    self.families = families(cfg)
    for name in ('linf_eps_255', 'l2_eps', 'l1_eps'):
      _check_positive_tuple(cfg, name)
    for name in ('pgd_steps', 'pgd_restarts', 'apgd_steps', 'autoattack_steps',
                 'autoattack_targets', 'autoattack_queries', 'square_queries'):
      _check_int(cfg, name, 1)
    for name in ('num_examples', 'autoattack_num_examples', 'batch_size'):
      _check_int(cfg, name, 0)
    if cfg.batch_size % jax.device_count():
      raise invalid(_field('batch_size'), cfg.batch_size,
                    f'0 or a multiple of the device count '
                    f'({jax.device_count()})')
    ratio = cfg.get('step_ratio')
    for norm in ('linf', 'l2', 'l1'):
      r = (ratio or {}).get(norm)
      if isinstance(r, bool) or not isinstance(r, (int, float)) or r <= 0:
        raise invalid(_field(f'step_ratio.{norm}'), r, 'a positive number')
    e = cfg.autoattack_eps_255
    if isinstance(e, bool) or not isinstance(e, (int, float)) or e <= 0:
      raise invalid(_field('autoattack_eps_255'), e, 'a positive number')
    if cfg.autoattack_version not in ensemble.VERSIONS:
      raise invalid(_field('autoattack_version'), cfg.autoattack_version,
                    ensemble.VERSIONS)
    if not isinstance(cfg.transfer, bool):
      raise invalid(_field('transfer'), cfg.transfer, 'True or False')
    m = cfg.masking_margin
    if isinstance(m, bool) or not isinstance(m, (int, float)) or not (
        0 <= m < 1):
      raise invalid(_field('masking_margin'), m, 'a number in [0, 1)')
    self.cfg = cfg
