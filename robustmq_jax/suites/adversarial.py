"""The adversarial suite: white-box, transfer and black-box attacks.

Every model is attacked white-box through `model.grad_apply` (for quantized
models the straight-through twin) and scored on `model.apply`; quantized
models are also attacked by transfer from their float model, and the
adversarials are scored on the real-integer graph when there is one. Every row
carries the gradient-masking checks of REFERENCE 6.4.

Config (`config.adversarial`, defaults from `default_config(image_size)`):

  attacks: cell families to run, from 'fgsm', 'pgd_linf', 'pgd_l2', 'pgd_l1',
    'apgd_ce', 'autoattack', 'square'.
  linf_eps_255: L-inf budgets in 1/255 units (fgsm, pgd_linf, apgd_ce).
  l2_eps, l1_eps: L2 / L1 budgets in [0, 1] pixel units.
  pgd_steps, pgd_restarts: PGD iterations and random restarts.
  step_ratio: PGD step = ratio * eps, per norm ('linf', 'l2', 'l1').
  apgd_steps: APGD-CE iterations (the 'apgd_ce' family).
  autoattack_eps_255: L-inf budget of AutoAttack and Square.
  autoattack_version: 'standard' or 'plus'.
  autoattack_steps, autoattack_targets, autoattack_queries: APGD/FAB
    iterations, APGD-T/FAB-T targets and Square queries inside AutoAttack
    (reference: 100, 9, 5000).
  square_queries: queries of the standalone black-box Square cell.
  num_examples: examples for fgsm/pgd/apgd cells, a fixed seeded subset
    (`SuiteContext.subset`); 0 = the whole split.
  autoattack_num_examples: the same for the autoattack and square cells.
  transfer: also attack quantized models by transfer from the float model.
  masking_margin: white-box accuracy may exceed transfer / black-box
    accuracy by this fraction before `masking_flag` is set.
  batch_size: global batch for this suite; 0 = `config.batch_size`.

Rows: 'accuracy' (white-box; robust accuracy: an example counts only if
it is classified correctly before and after the attack), 'n',
'zero_grad_fraction' (AutoAttack's check, on the margin loss: input gradient
exactly zero on the clean image, through the gradient forward;
`attacks.masking.zero_gradient`), 'accuracy_transfer' (quantized models),
'accuracy_int8' (when a real-integer forward exists), 'masking_flag'. AutoAttack rows add the
robust fraction after each stage ('accuracy_after_<stage>') and flag Square
lowering the white-box stages' accuracy by more than 0.2 points (AutoAttack's
own check). The report (`reporting/adversarial.py`) also flags a standalone
Square accuracy below the white-box accuracy at the same budget.

Compiles: one per model, attack program and static setting (norm, restarts,
AutoAttack's steps and queries); eps, the step size, the PGD step count and
its random start travel in the variables pytree as traced scalars, so an
epsilon grid reuses one compiled program, and FGSM (PGD-1 from the clean
image, step eps) shares the L-inf PGD program. Transfer adversarials are
crafted once on the float model and kept for every quantized model of the
run (`transfer_cache`; up to 1 GiB of images, beyond that each quantized
program crafts its own), so a quantized program holds one attack, not two;
in a run with quantized precisions the float model's own white-box cells
hand their adversarials over, so nothing crafts them a second time. The
zero-gradient check looks at clean images only: it is computed in the first
cell of a model and subset and reused by the others (a traced flag skips it
in the same program).
"""

import zlib
from typing import Any, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp

from robustmq_jax import attacks
from robustmq_jax.attacks import losses
from robustmq_jax.attacks import masking
from robustmq_jax.data.base import iter_batches
from robustmq_jax.quant.spec import FLOAT_PRECISION
from robustmq_jax.results import outcomes
from robustmq_jax.suites import adversarial_config
from robustmq_jax.suites import base
from robustmq_jax.suites import clean
from robustmq_jax.suites import transfer_cache

# Re-exported: the suite's configuration lives in `adversarial_config`.
FAMILIES = adversarial_config.FAMILIES
STANDARD_ATTACKS = adversarial_config.STANDARD_ATTACKS
WHITE_BOX = adversarial_config.WHITE_BOX
default_config = adversarial_config.default_config
_NORM = adversarial_config.NORM
_Settings = adversarial_config.Settings
_families = adversarial_config.families


def _per_example_keys(key, ids):
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(ids.astype(jnp.uint32))


def _correct(logits, y):
  return losses.predicts(logits, y).astype(jnp.float32)


@base.register
class AdversarialSuite(base.Suite):
  """FGSM, PGD (L-inf/L2/L1), APGD-CE, AutoAttack, Square; masking checks."""

  name = 'adversarial'

  def __init__(self):
    self._fns = {}
    self._transfer = transfer_cache.TransferCache()
    # Subset bytes -> (variables, grad_apply, summed zero-gradient check):
    # the check looks at clean images only, so every cell of a model and
    # subset has the same count; it is computed in the first one.
    self._zero_grad = {}

  def release(self, *, model_done: bool = False) -> None:
    super().release(model_done=model_done)
    self._zero_grad.clear()
    if model_done:
      self._transfer.clear()

  def validate(self, config) -> None:
    # Image size is unknown here; validation of values does not depend on it.
    _Settings(config, 224)

  # Cells.

  def cells(self, ctx, model) -> Sequence[base.Cell]:
    s = _Settings(ctx.config, model.image_size).cfg
    n_pgd = self._n(ctx, s.num_examples)
    n_aa = self._n(ctx, s.autoattack_num_examples)
    out = []
    for fam in _families(s):
      if fam in ('fgsm', 'pgd_linf', 'apgd_ce'):
        for e in s.linf_eps_255:
          p = {'norm': 'linf', 'eps': e / 255, 'eps_255': e}
          if fam == 'pgd_linf':
            p.update(steps=s.pgd_steps, step_size=s.step_ratio.linf * e / 255,
                     restarts=s.pgd_restarts)
          elif fam == 'apgd_ce':
            p.update(steps=s.apgd_steps)
          out.append(base.Cell(fam, p, n_pgd))
      elif fam in ('pgd_l2', 'pgd_l1'):
        norm = _NORM[fam]
        for e in (s.l2_eps if norm == 'l2' else s.l1_eps):
          out.append(base.Cell(fam, {
              'norm': norm, 'eps': e, 'steps': s.pgd_steps,
              'step_size': s.step_ratio[norm] * e,
              'restarts': s.pgd_restarts}, n_pgd))
      elif fam == 'autoattack':
        e = s.autoattack_eps_255
        out.append(base.Cell(fam, {
            'norm': 'linf', 'eps': e / 255, 'eps_255': e,
            'version': s.autoattack_version, 'steps': s.autoattack_steps,
            'targets': s.autoattack_targets,
            'queries': s.autoattack_queries}, n_aa))
      elif fam == 'square':
        e = s.autoattack_eps_255
        out.append(base.Cell(fam, {
            'norm': 'linf', 'eps': e / 255, 'eps_255': e,
            'queries': s.square_queries}, n_aa))
    return out

  @staticmethod
  def _n(ctx, n):
    return n if n and n < ctx.num_examples else None

  # Per-example functions, built once per model and static setting.

  def _fn(self, kind: str, statics: tuple, model, transfer: bool,
          adv_out: bool = False):
    fm = model.float_model if transfer else None
    cache_key = (kind, statics, model.apply, model.grad_apply,
                 model.serve_apply, fm.grad_apply if fm is not None else None,
                 adv_out)
    if cache_key not in self._fns:
      self._fns[cache_key] = _build_fn(kind, dict(statics), model, fm,
                                       adv_out)
    return self._fns[cache_key]

  def _score_fn(self, apply):
    """Per-example top-1 of `apply` (scores kept transfer adversarials)."""
    cache_key = ('score', apply)
    if cache_key not in self._fns:
      self._fns[cache_key] = clean.correct_fn(apply)
    return self._fns[cache_key]

  def _craft_fn(self, kind: str, statics: tuple, float_model):
    """Per-example fn: the float model's white-box adversarials."""
    cache_key = ('craft', kind, statics, float_model.grad_apply)
    if cache_key not in self._fns:
      attack = _attack(kind, dict(statics))
      apply = float_model.grad_apply

      def craft(v, batch, key):
        keys = _per_example_keys(key, batch['id'])
        src = lambda z: apply(v['float'], z)
        return {'adv': attack(keys, src, batch['image'], batch['label'], v)}

      self._fns[cache_key] = craft
    return self._fns[cache_key]

  def run(self, ctx, model, cells) -> Iterator[tuple[base.Cell, dict[str,
                                                                      Any]]]:
    s = _Settings(ctx.config, model.image_size).cfg
    quantized = model.float_model is not None
    batch_size = s.batch_size or ctx.batch_size
    for cell in cells:
      p = dict(cell.params)
      kind = cell.noise
      transfer = (quantized and s.transfer and kind in WHITE_BOX)
      program, statics, traced = _program(kind, p)
      variables = {
          'model': model.variables,
          'serve': model.serve_variables,
          'float': model.float_model.variables if transfer else None,
          'eps': jnp.float32(p['eps']),
          'step': jnp.float32(traced.get('step', 0.0)),
          'steps': jnp.int32(traced.get('steps', 0)),
          'random_start': jnp.bool_(traced.get('random_start', False)),
      }
      ids = ctx.subset(cell.n)
      known = self._zero_grad.get(ids.tobytes())
      if known is not None and not (known[0] is model.variables and
                                    known[1] is model.grad_apply):
        known = None
      variables['check_grad'] = jnp.bool_(known is None)

      def batches(load=None, ids=ids):
        return iter_batches(
            ctx.dataset, batch_size // jax.process_count(), ids=ids,
            process_index=jax.process_index(),
            process_count=jax.process_count(), load=load)

      key = jax.random.fold_in(jax.random.key(ctx.seed),
                               zlib.crc32(kind.encode()))
      kept = None
      transfer_key = (program, statics, tuple(sorted(traced.items())),
                      p['eps'], ids.tobytes())
      if transfer:
        kept = self._transfer.images(
            ctx, model.float_model, transfer_key,
            self._craft_fn(program, statics, model.float_model),
            variables, key, batches, len(ids))
      # The float model's white-box adversarials are the transfer
      # adversarials of the quantized models to come: kept from its cell.
      hand_over = (not quantized and s.transfer and kind in WHITE_BOX and
                   _quantized_follow(ctx.config) and
                   not self._transfer.has(ctx, model, transfer_key) and
                   self._transfer.has_room(ctx, len(ids)))
      fn = self._fn(program, statics, model, transfer and kept is None,
                    adv_out=hand_over)
      desc = (f'adversarial {kind} {model.name} {model.precision} '
              f'eps={p["eps"]:.4g}')
      sums = ctx.evaluator.sums(fn, batches(), variables=variables, key=key,
                                total=len(ids), desc=desc, keep=('correct',),
                                collect=('adv',) if hand_over else ())
      if hand_over:
        out, adv_ids = sums.collected
        self._transfer.put(ctx, model, transfer_key, out['adv'], adv_ids)
      if 'zero_grad' in sums:
        if known is None:
          self._zero_grad[ids.tobytes()] = (model.variables, model.grad_apply,
                                            sums['zero_grad'])
        else:
          sums['zero_grad'] = known[2]
      if kept is not None:
        images, rows = kept
        # .get: another process's id only reaches `load` for the empty
        # padding batch of a host with no rows left, whose images are
        # sliced away.
        load = lambda chunk: images[[rows.get(int(i), 0) for i in chunk]]
        scored = ctx.evaluator.sums(
            self._score_fn(model.apply), batches(load),
            variables=model.variables, total=len(ids),
            desc=desc + ' transfer')
        sums['correct_transfer'] = scored['correct']
      metrics = _metrics(kind, sums, s.masking_margin)
      metrics[outcomes.FIELD] = outcomes.from_sums(sums)
      yield cell, metrics

def _program(kind: str, p: Mapping[str, Any]) -> tuple[str, tuple, dict]:
  """(attack program, its static settings, traced settings) of a cell.

  FGSM is run as L-inf PGD with one step of size eps from the clean image
  (the same image as `attacks.fgsm` up to float rounding of the
  projection), so FGSM and PGD cells share one compiled program.
  """
  if kind == 'fgsm':
    return 'pgd_linf', (('restarts', 1),), {
        'steps': 1, 'step': p['eps'], 'random_start': False}
  if kind in ('pgd_linf', 'pgd_l2', 'pgd_l1'):
    return kind, (('restarts', p['restarts']),), {
        'steps': p['steps'], 'step': p['step_size'], 'random_start': True}
  keys = {'apgd_ce': ('steps',),
          'autoattack': ('version', 'steps', 'targets', 'queries'),
          'square': ('queries',)}[kind]
  return kind, tuple((k, p[k]) for k in keys), {}


def _attack(kind: str, st: Mapping[str, Any]):
  """attack(keys, logits_fn, x, y, v) for a white-box program."""
  if kind == 'apgd_ce':
    return lambda k, f, x, y, v: attacks.apgd_ce(
        k, f, x, y, eps=v['eps'], steps=st['steps'])
  norm = _NORM[kind]
  return lambda k, f, x, y, v: attacks.pgd(
      k, f, x, y, eps=v['eps'], step_size=v['step'], steps=v['steps'],
      norm=norm, restarts=st['restarts'], random_start=v['random_start'])


def _quantized_follow(config) -> bool:
  """Whether the run has quantized precisions (transfer targets)."""
  return any(p != FLOAT_PRECISION for p in config.get('precisions', ()))


def _zero_gradient(check, grads, x, y):
  """`masking.zero_gradient`, or all False when `check` is False (the
  count is already known from another cell of the model and subset)."""
  return jax.lax.cond(check, lambda: masking.zero_gradient(grads, x, y),
                      lambda: jnp.zeros(x.shape[:1], bool))


def _build_fn(kind, st, model, float_model, adv_out=False):
  """The per-example function of one attack family for one model; with
  `adv_out`, it also returns the white-box adversarials ('adv')."""
  apply, grad_apply, serve_apply = (model.apply, model.grad_apply,
                                    model.serve_apply)
  float_apply = (float_model.grad_apply if float_model is not None
                 else None)

  def fn(v, batch, key):
    x, y = batch['image'], batch['label']
    keys = _per_example_keys(key, batch['id'])
    real = batch['mask']
    evaluate = lambda z: apply(v['model'], z)
    grads = lambda z: grad_apply(v['model'], z)
    out = {}
    if kind in WHITE_BOX:
      attack = _attack(kind, st)
      adv = attack(keys, grads, x, y, v)
      out['zero_grad'] = _zero_gradient(v['check_grad'], grads, x, y)
      if float_apply is not None:
        src = lambda z: float_apply(v['float'], z)
        adv_t = attack(keys, src, x, y, v)
        out['correct_transfer'] = _correct(evaluate(adv_t), y)
      if adv_out:
        out['adv'] = adv
    elif kind == 'autoattack':
      adv, after = attacks.autoattack(
          keys, grads, x, y, eps=v['eps'], version=st['version'],
          steps=st['steps'], n_target_classes=st['targets'],
          n_queries=st['queries'], return_stages=True, attack_mask=real)
      for stage, robust in after.items():
        out['after_' + stage.replace('-', '_')] = robust
      out['zero_grad'] = _zero_gradient(v['check_grad'], grads, x, y)
    else:  # square: black-box, queries the evaluated forward itself.
      adv = attacks.square(keys, evaluate, x, y, eps=v['eps'],
                           n_queries=st['queries'], attack_mask=real)
    out['correct'] = _correct(evaluate(adv), y)
    if serve_apply is not None:
      out['correct_int8'] = _correct(serve_apply(v['serve'], adv), y)
    return out

  return fn


def _metrics(kind: str, sums: Mapping[str, float], margin: float):
  n = sums['n']
  m = {'accuracy': sums['correct'] / n, 'n': int(n)}
  if 'zero_grad' in sums:
    m['zero_grad_fraction'] = sums['zero_grad'] / n
  if 'correct_transfer' in sums:
    m['accuracy_transfer'] = sums['correct_transfer'] / n
  if 'correct_int8' in sums:
    m['accuracy_int8'] = sums['correct_int8'] / n
  flag = False
  if kind in WHITE_BOX:
    flag = masking.masking_flag(m['accuracy'],
                                transfer_accuracy=m.get('accuracy_transfer'),
                                margin=margin)
  if kind == 'autoattack':
    stages = {k[len('after_'):]: v / n for k, v in sums.items()
              if k.startswith('after_')}
    for stage, acc in stages.items():
      m[f'accuracy_after_{stage}'] = acc
    white = [a for s, a in stages.items() if s != 'square']
    if 'square' in stages and white:
      flag = stages['square'] < min(white) - masking.SQUARE_MARGIN
  m['masking_flag'] = bool(flag)
  return m
