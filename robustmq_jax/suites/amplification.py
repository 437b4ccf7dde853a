"""The amplification suite: layer-by-layer growth of an input perturbation.

Defensive Quantization's motivation, measured on every model and precision
(`robustmq_jax.defenses.amplification`): for a perturbation delta of L-inf
size eps, the mean over examples of

  gain_l = || h_l(x + delta) - h_l(x) ||_2 / || delta ||_2

at the outputs h_l of the first layer, every residual / encoder block and
the classifier head (or every Conv/Dense with granularity 'layers').

Cells (noise names):
  amplification_pgd_float  delta = PGD against the float model: the same
                           perturbation for every precision, so the gains
                           compare how each model propagates it;
  amplification_pgd_self   delta = PGD against the model itself (its
                           straight-through twin): the perturbation an
                           attacker would use;
  amplification_random     delta = eps * random signs (clipped to [0, 1]).

Rows: 'accuracy' (on x + delta), 'n', 'gain' and 'relative' ({layer: mean}),
'layers' (call order), 'gain_logits' (the head's gain) and 'gain_max'.

Config (`config.amplification`): perturbations, eps_255, steps, step_ratio
(PGD step = ratio * eps), num_examples (fixed seeded subset; 0 = all),
granularity ('blocks' or 'layers').
"""

import zlib
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from robustmq_jax import attacks
from robustmq_jax import config_fields
from robustmq_jax.defenses import amplification as amp
from robustmq_jax.errors import invalid
from robustmq_jax.results import outcomes
from robustmq_jax.suites import base

KINDS = ('pgd_float', 'pgd_self', 'random')
PREFIX = 'amplification_'


def default_config(image_size: int = 224) -> ml_collections.ConfigDict:
  """Defaults: PGD-10 at 4/255 on 128 sample / 1000 ImageNet images."""
  return ml_collections.ConfigDict({
      'perturbations': KINDS,
      'eps_255': 4.0,
      'steps': 10,
      'step_ratio': 0.25,
      'num_examples': 128 if image_size <= 32 else 1000,
      'granularity': 'blocks',
  })


def _settings(config) -> ml_collections.ConfigDict:
  cfg = default_config()
  given = config.get('amplification') or {}
  for k, v in given.items():
    if k not in cfg:
      raise invalid('config.amplification', k, sorted(cfg.keys()))
    cfg[k] = v
  kinds = config_fields.parse_list(
      cfg.perturbations, 'config.amplification.perturbations', str)
  if not kinds or any(k not in KINDS for k in kinds):
    raise invalid('config.amplification.perturbations', cfg.perturbations,
                  f'a tuple of {", ".join(KINDS)}')
  cfg.perturbations = tuple(kinds)
  for key, lo in (('eps_255', 0.0), ('step_ratio', 0.0)):
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= lo:
      raise invalid(f'config.amplification.{key}', v, 'a positive number')
  for key, lo in (('steps', 1), ('num_examples', 0)):
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
      raise invalid(f'config.amplification.{key}', v,
                    f'an integer >= {lo}')
  if cfg.granularity not in amp.GRANULARITIES:
    raise invalid('config.amplification.granularity', cfg.granularity,
                  amp.GRANULARITIES)
  return cfg


def _per_example_keys(key, ids):
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(ids.astype(jnp.uint32))


def _build_fn(kind: str, steps: int, granularity: str, model):
  # The plain forwards (`ModelUnderTest.grad_apply`): gradients and the
  # layer interception of `amp.amplification` trace the module calls here.
  grad_apply = model.grad_apply
  fm = model.float_model
  float_apply = fm.grad_apply if fm is not None else grad_apply

  def fn(v, batch, key):
    x, y = batch['image'], batch['label']
    keys = _per_example_keys(key, batch['id'])
    if kind == 'random':
      signs = jax.vmap(lambda k: jax.random.rademacher(
          k, x.shape[1:], jnp.float32))(keys)
      adv = jnp.clip(x + v['eps'] * signs, 0.0, 1.0)
    else:
      src_apply, src_vars = ((float_apply, v['float']) if kind == 'pgd_float'
                             else (grad_apply, v['model']))
      adv = attacks.pgd(keys, lambda z: src_apply(src_vars, z), x, y,
                        eps=v['eps'], step_size=v['step'], steps=steps)
    logits, gains, rel = amp.amplification(grad_apply, v['model'], x, adv - x,
                                           granularity=granularity)
    out = {'correct': (jnp.argmax(logits, -1) == y).astype(jnp.float32)}
    out.update({'gain/' + k: g for k, g in gains.items()})
    out.update({'rel/' + k: r for k, r in rel.items()})
    return out

  return fn


@base.register
class AmplificationSuite(base.Suite):
  """Per-layer error amplification under adversarial / random inputs."""

  name = 'amplification'

  def __init__(self):
    self._fns = {}

  def validate(self, config) -> None:
    _settings(config)

  def cells(self, ctx, model) -> Sequence[base.Cell]:
    s = _settings(ctx.config)
    n = s.num_examples if s.num_examples and (
        s.num_examples < ctx.num_examples) else None
    params = {'norm': 'linf', 'eps': s.eps_255 / 255, 'eps_255': s.eps_255,
              'granularity': s.granularity}
    out = []
    for kind in s.perturbations:
      p = dict(params)
      if kind != 'random':
        p.update(steps=s.steps, step_size=s.step_ratio * s.eps_255 / 255)
      out.append(base.Cell(PREFIX + kind, p, n))
    return out

  def run(self, ctx, model, cells) -> Iterator[tuple[base.Cell, dict[str,
                                                                      Any]]]:
    s = _settings(ctx.config)
    size = model.image_size
    order = amp.layer_order(model.grad_apply, model.variables, (size, size, 3),
                            granularity=s.granularity)
    for cell in cells:
      kind = cell.noise[len(PREFIX):]
      p = dict(cell.params)
      steps = int(p.get('steps', 0))
      cache_key = (kind, steps, s.granularity, model.apply, model.grad_apply,
                   model.float_model.grad_apply if model.float_model else None)
      if cache_key not in self._fns:
        self._fns[cache_key] = _build_fn(kind, steps, s.granularity, model)
      variables = {
          'model': model.variables,
          'float': (model.float_model.variables if model.float_model
                    else model.variables),
          'eps': jnp.float32(p['eps']),
          'step': jnp.float32(p.get('step_size', 0.0))}
      ids = ctx.subset(cell.n)
      # Both PGD kinds share random starts (for a float model they coincide).
      stream = 'random' if kind == 'random' else 'pgd'
      key = jax.random.fold_in(jax.random.key(ctx.seed),
                               zlib.crc32(stream.encode()))
      sums = ctx.evaluator.sums(
          self._fns[cache_key], ctx.batches(ids=ids), variables=variables,
          key=key, total=len(ids),
          desc=f'amplification {kind} {model.name} {model.precision}',
          keep=('correct',))
      n = sums['n']
      gain = {k: sums['gain/' + k] / n for k in order}
      rel = {k: sums['rel/' + k] / n for k in order}
      yield cell, {'accuracy': sums['correct'] / n, 'n': int(n),
                   outcomes.FIELD: outcomes.from_sums(sums),
                   'layers': order, 'gain': gain, 'relative': rel,
                   'gain_logits': gain[order[-1]],
                   'gain_max': max(gain.values())}
