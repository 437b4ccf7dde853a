"""Quantization-aware training: DoReFa, PACT and LSQ, fine-tuned with optax.

Training runs in plain JAX (`QatOps`: fake quantization with
straight-through estimators, learned parameters in 'params'), because AQT
has no learned clipping. Every method ends on the reference grid (scale s,
integers clip(round(x / s), qmin, qmax)), so its result maps exactly onto
AQT's static scales for evaluation:

  method  activations (b < 8)                  weights
  lsq     learned step s (LSQ gradient, grad   learned step s per tensor or
          scale 1/sqrt(N qmax)); eval: s       per channel; eval: s
  pact    clip to [0, a] or [-a, a], learned   min-max: s = max|w| / half
          a (PACT gradient); eval: a / half
  dorefa  clip to [0, 1] or [-1, 1];           w' = tanh(w) / max|tanh(w)|
          eval: 1 / half                       (kernel replaced by w'),
                                               s = max|w'| / half

half = (2^b - 1) / 2 (signed) or 2^b - 1 (unsigned). 8-bit activations of
PACT and DoReFa keep the calibrated static scale (MQBench uses a min-max
observer there; we freeze it at calibration). Initialisation: LSQ steps from
the calibrated activation scales (config.quant.calibration) and MSE-optimal
weight scales; PACT alphas from the calibrated activation bounds.
BatchNorm trains in batch-statistics mode and its running statistics are
updated. With ``spec.bn_fold`` (PyTorch's / MQBench's ConvBn2d), a conv
followed by a BatchNorm quantizes the folded kernel w * f, f = gamma /
sqrt(running_var + eps), and divides the conv output by f again, so the
BatchNorm (batch statistics, running statistics updated) sees the usual
scale; the export folds the BatchNorm (`bnfold`). After training an export
pass reads each layer's final scales (and DoReFa's normalised kernels) out
of the same code that trained them.
"""

import dataclasses
import math
import time
from typing import Any

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from robustmq_jax import training
from robustmq_jax.models.ops import FLOAT_OPS
from robustmq_jax.models.ops import Role
from robustmq_jax.quant import bnfold
from robustmq_jax.quant import calibration
from robustmq_jax.quant import plan as plan_lib
from robustmq_jax.quant import reference
from robustmq_jax.quant import sites
from robustmq_jax.quant.plan import LayerQuant
from robustmq_jax.quant.plan import TensorQuant
from robustmq_jax.quant.spec import QuantSpec

EXPORT = 'qat_export'
_EPS = 1e-8


def lsq_quant(x: jax.Array, step: jax.Array, tq: TensorQuant):
  """LSQ (Esser et al. 2020): fake quantization with a learned step.

  Returns:
    (fake-quantized x, the step used, without gradient).
  """
  s = jnp.maximum(jnp.abs(step), _EPS)
  n = max(1, x.size // max(1, s.size))
  g = 1.0 / math.sqrt(n * max(tq.qmax, 1))
  s = s * g + lax.stop_gradient(s - s * g)  # value s, gradient scaled by g
  v = jnp.clip(x * lax.reciprocal(s), tq.qmin, tq.qmax)
  v = v + lax.stop_gradient(
      lax.round(v, lax.RoundingMethod.TO_NEAREST_EVEN) - v)
  return v * s, lax.stop_gradient(s)


def pact_quant(x: jax.Array, alpha: jax.Array, tq: TensorQuant):
  """PACT (Choi et al. 2018): learned clipping bound, then the grid."""
  a = jnp.maximum(jnp.abs(alpha), _EPS)
  y = jnp.minimum(x, a)
  y = jnp.maximum(y, 0.0 if tq.unsigned else -a)
  s = lax.stop_gradient(a / reference.half_range(tq.bits, tq.unsigned))
  q = reference.fake_quant(lax.stop_gradient(y), s, tq.bits, tq.unsigned)
  return y + lax.stop_gradient(q - y), s


def dorefa_act_quant(x: jax.Array, tq: TensorQuant):
  """DoReFa (Zhou et al. 2016) activations: clip to [0, 1] / [-1, 1]."""
  y = jnp.clip(x, 0.0 if tq.unsigned else -1.0, 1.0)
  s = jnp.float32(1.0 / reference.half_range(tq.bits, tq.unsigned))
  q = reference.fake_quant(lax.stop_gradient(y), s, tq.bits, tq.unsigned)
  return y + lax.stop_gradient(q - y), s


def dorefa_weight(w: jax.Array) -> jax.Array:
  """tanh(w) / max|tanh(w)| (per tensor)."""
  t = jnp.tanh(w)
  return t / jnp.maximum(jnp.max(jnp.abs(t)), _EPS)


def minmax_weight_quant(w: jax.Array, tq: TensorQuant):
  """Min-max symmetric weights with the straight-through estimator."""
  bound = lax.stop_gradient(reference.absmax(w, tq.shared_axes))
  s = reference.scale_from_bound(bound, tq.bits, False)
  return reference.fake_quant_ste(w, s, tq.bits, False), s


class _QatSite(nn.Module):
  """Fake-quantizes the operands of one contraction (plain JAX)."""
  layer: LayerQuant
  method: str
  init: Any = None  # {'lhs': scale, 'rhs': scale} from calibration.
  fold: Any = None  # (BatchNorm path, epsilon) when its BN is folded.

  def _act(self, x, side: str, tq: TensorQuant | None):
    if tq is None:
      return x
    init = np.asarray(self.init[side], np.float32)
    if self.method == 'lsq':
      step = self.param(f'{side}_step', lambda _: jnp.asarray(init))
      y, s = lsq_quant(x, step, tq)
    elif self.method == 'pact' and tq.bits < 8:
      bound = init * reference.half_range(tq.bits, tq.unsigned)
      alpha = self.param(f'{side}_alpha', lambda _: jnp.asarray(bound))
      y, s = pact_quant(x, alpha, tq)
    elif self.method == 'dorefa' and tq.bits < 8:
      y, s = dorefa_act_quant(x, tq)
    else:  # 8-bit PACT / DoReFa activations: the calibrated static scale.
      s = jnp.asarray(init)
      y = reference.fake_quant_ste(x, s, tq.bits, tq.unsigned)
    self.sow(EXPORT, f'{side}_scale', jnp.asarray(s, jnp.float32))
    return y

  def _weight(self, w, tq: TensorQuant | None):
    if tq is None:
      return w
    f = None if self.fold is None else bnfold.traced_fold_factor(
        self, *self.fold)
    if f is not None:
      w = w * f  # Per output channel (last kernel axis).
    y, w_eff, s = self._quantized_weight(w, tq)
    self.sow(EXPORT, 'rhs_scale', s)
    self.sow(EXPORT, 'kernel', w_eff)
    return y if f is None else y / f

  def _quantized_weight(self, w, tq: TensorQuant):
    """(fake-quantized kernel, the kernel it quantizes, its scale)."""
    if self.method == 'lsq':
      init = np.asarray(self.init['rhs'], np.float32)
      step = self.param('rhs_step', lambda _: jnp.asarray(init))
      y, s = lsq_quant(w, step, tq)
      w_eff = w
    elif self.method == 'dorefa':
      w_eff = dorefa_weight(w)
      y, s = minmax_weight_quant(w_eff, tq)
    else:
      w_eff = w
      y, s = minmax_weight_quant(w, tq)
    return y, w_eff, s

  def operands(self, lhs, rhs):
    lhs = self._act(lhs, 'lhs', self.layer.lhs)
    if self.layer.rhs_is_weight:
      return lhs, self._weight(rhs, self.layer.rhs)
    return lhs, self._act(rhs, 'rhs', self.layer.rhs)


QatDotGeneral, QatConv, QatEinsum = sites.contraction_modules(
    _QatSite, 'Qat')


class QatOps(sites.SiteOps):
  """Plain-JAX fake quantization of every planned contraction."""
  modules = (QatDotGeneral, QatConv, QatEinsum)

  def __init__(self, plan: plan_lib.Plan, method: str,
               init: dict[str, dict[str, Any]],
               folds: dict[str, tuple[str, float]] | None = None):
    self.plan, self.method, self.init = plan, method, init
    self.folds = folds or {}

  def site_kwargs(self, role: Role) -> dict[str, Any]:
    return {'method': self.method, 'init': self.init.get(role.path),
            'fold': self.folds.get(role.path)}


def learned_params(plan: plan_lib.Plan, method: str,
                   init: dict[str, dict[str, Any]]) -> dict[str, Any]:
  """The QAT parameters (LSQ steps, PACT alphas) as a params subtree."""
  out: dict[str, Any] = {}
  for path, layer in plan.items():
    entries = {}
    sides = [('lhs', layer.lhs, False),
             ('rhs', layer.rhs, layer.rhs_is_weight)]
    for side, tq, is_weight in sides:
      if tq is None:
        continue
      scale = np.asarray(init[path][side], np.float32)
      if method == 'lsq':
        entries[f'{side}_step'] = scale
      elif method == 'pact' and not is_weight and tq.bits < 8:
        entries[f'{side}_alpha'] = scale * np.float32(
            reference.half_range(tq.bits, tq.unsigned))
    if entries:
      node = out
      for p in plan_lib.scale_module_path(layer).split('/'):
        node = node.setdefault(p, {})
      node.update(entries)
  return out


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
  out = dict(a)
  for k, v in b.items():
    out[k] = _merge(out[k], v) if k in out and hasattr(v, 'items') else v
  return out


def _strip(params: dict[str, Any], learned: dict[str, Any]) -> dict[str, Any]:
  """params without the leaves of `learned`."""
  out = {}
  for k, v in params.items():
    if k in learned and hasattr(v, 'items'):
      sub = _strip(v, learned[k])
      if sub:
        out[k] = sub
    elif k not in learned:
      out[k] = v
  return out


@dataclasses.dataclass
class QatSetup:
  """A model ready for QAT: its plan, initial scales and QAT module.

  Attributes:
    plan: Role path -> LayerQuant (signs from calibration).
    scales: the calibrated initial scales (Role path -> {'lhs', 'rhs'});
      LSQ steps and PACT alphas start from them, 8-bit PACT / DoReFa
      activations keep them.
    pairs: the conv -> BatchNorm pairs folded (empty without bn_fold).
    module: the model with `QatOps` (fake quantization, learned scales).
    learned: the QAT parameters (LSQ steps, PACT alphas) as a params
      subtree, at their initial values.
  """
  plan: plan_lib.Plan
  scales: dict[str, dict[str, np.ndarray]]
  pairs: list[bnfold.ConvBn]
  module: nn.Module
  learned: dict[str, Any]

  def initial_variables(self, float_variables: dict[str, Any]
                        ) -> dict[str, Any]:
    """The float variables with the QAT parameters added to 'params'."""
    variables = dict(float_variables)
    variables['params'] = _merge(float_variables['params'], self.learned)
    return variables


def bn_pairs(module_fn, spec: QuantSpec, image_size: int
             ) -> list[bnfold.ConvBn]:
  """The conv -> BatchNorm pairs QAT folds (none without spec.bn_fold)."""
  if not spec.bn_fold:
    return []
  return bnfold.conv_bn_pairs(module_fn(FLOAT_OPS), image_size)


def calibrate(module_fn, float_variables, images, spec: QuantSpec, *,
              seed: int = 0) -> tuple[plan_lib.Plan, dict[str, Any]]:
  """The plan and initial scales of QAT (calibration of the folded model).

  `images` may be lazy (`robustmq_jax.data.lazy_arrays`): calibration
  reads only the `num_calib_batches * calib_batch_size` images it draws.
  """
  pairs = bn_pairs(module_fn, spec, images[:1].shape[1])
  cal = calibration.calibrate(
      module_fn, bnfold.fold_batchnorm(float_variables, pairs), images, spec,
      seed=seed, weight_calibration='mse' if spec.method == 'lsq' else None)
  return cal.plan, cal.scales


def setup(module_fn, spec: QuantSpec, plan: plan_lib.Plan,
          scales: dict[str, dict[str, Any]], image_size: int) -> QatSetup:
  """The QAT module of a calibrated plan (also after a restart)."""
  pairs = bn_pairs(module_fn, spec, image_size)
  folds = {p.conv: (p.bn, p.epsilon) for p in pairs}
  module = module_fn(QatOps(plan, spec.method, scales, folds))
  return QatSetup(plan, scales, pairs, module,
                  learned_params(plan, spec.method, scales))


def recipe(spec: QuantSpec) -> training.Recipe:
  """`spec.qat` as the optimiser recipe of `training`."""
  r = spec.qat
  return training.Recipe(
      steps=r.steps, batch_size=r.batch_size, learning_rate=r.learning_rate,
      warmup_steps=r.warmup_steps, weight_decay=r.weight_decay,
      optimizer=r.optimizer, label_smoothing=r.label_smoothing,
      pad_crop=r.pad_crop)


def export(qs: QatSetup, variables: dict[str, Any], image_size: int
           ) -> dict[str, Any]:
  """Trained QAT variables -> the quantized model's variables.

  Reads each layer's final scales (and DoReFa's normalised kernels) from
  the code that trained them, folds BatchNorm when it was folded, snaps
  every quantized kernel to its grid and adds the 'quant' collection.
  """
  from robustmq_jax.quant import pipeline  # pylint: disable=g-import-not-at-top
  variables = pipeline.to_numpy(variables)
  # No exported value depends on the input (scales and kernels only).
  x = np.zeros((1, image_size, image_size, 3), np.float32)
  _, state = jax.jit(lambda v, z: qs.module.apply(
      v, z, train=False, mutable=[EXPORT]))(variables, x)
  exported = pipeline.to_numpy(state[EXPORT])
  params = _strip(variables['params'], qs.learned)
  scales = {}
  for path, layer in qs.plan.items():
    if not layer.quantized:
      continue
    node = exported
    for p in plan_lib.scale_module_path(layer).split('/'):
      node = node[p]
    scales[path] = {side: np.asarray(node[f'{side}_scale'][0], np.float32)
                    for side in ('lhs', 'rhs') if f'{side}_scale' in node}
    if 'kernel' in node:
      pnode = params
      for p in path.split('/'):
        pnode = pnode[p]
      pnode['kernel'] = np.asarray(node['kernel'][0], np.float32)
  out = {k: v for k, v in variables.items() if k != 'params'}
  if qs.pairs:  # Exported kernels of quantized convs are already folded.
    out = bnfold.fold_batchnorm(
        dict(out, params=params), qs.pairs,
        folded_kernels={p for p, l in qs.plan.items() if l.rhs is not None})
    params = out.pop('params')
  out['params'] = pipeline.snap_kernels(qs.plan, params, scales)
  out[plan_lib.QUANT_COLLECTION] = pipeline.quant_collection(qs.plan, scales)
  return out


def meta(spec: QuantSpec, qs: QatSetup, seconds: float,
         loss_start: float | None, loss_end: float | None) -> dict[str, Any]:
  """quant.json's provenance of a QAT model."""
  out = {'method': spec.method, 'calibration': spec.calibration,
         'qat_steps': spec.qat.steps, 'qat_seconds': round(seconds, 1),
         'qat_loss_start': loss_start, 'qat_loss_end': loss_end}
  if qs.pairs:
    out['bn_folded'] = len(qs.pairs)
  return out


def quantization_aware_training(module_fn, float_variables, images, labels,
                                spec: QuantSpec, *, seed: int = 0, mesh=None,
                                penalty: training.Penalty | None = None):
  """Calibrates, fine-tunes with `spec.qat` and exports to static scales.

  In memory, in one call (the main job's cached QAT and the defenses);
  `robustmq_jax.train` runs the same steps over a stream, with checkpoints.

  Args:
    module_fn: ops -> model.
    float_variables: numpy variables of the float model.
    images: uint8 NHWC training images.
    labels: int labels.
    spec: spec with a QAT method.
    seed: training seed.
    mesh: device mesh.
    penalty: optional regulariser of the params (e.g. Defensive
      Quantization's orthogonality term), forwarded to `training.fit`.

  Returns:
    (plan, variables, meta): variables hold the snapped kernels, BatchNorm
    statistics and the 'quant' scales.
  """
  if labels is None:
    raise ValueError('QAT needs labels')
  size = images[:1].shape[1]
  plan, scales = calibrate(module_fn, float_variables, images, spec,
                           seed=seed)
  qs = setup(module_fn, spec, plan, scales, size)
  variables = qs.initial_variables(float_variables)
  r = spec.qat
  start = time.perf_counter()
  losses = []
  if r.steps:
    variables, losses = training.fit(qs.module, variables, images, labels,
                                     recipe(spec), key=jax.random.key(seed),
                                     mesh=mesh, penalty=penalty,
                                     log_every=max(1, r.steps // 5))
  seconds = time.perf_counter() - start
  out = export(qs, variables, size)
  n = max(1, min(20, len(losses) // 5))
  return plan, out, meta(
      spec, qs, seconds,
      float(np.mean(losses[:n])) if losses else None,
      float(np.mean(losses[-n:])) if losses else None)
