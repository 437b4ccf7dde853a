"""Layer-wise adversarial-aware quantization (LAAQ), after Song, Ranjan, Li.

What is known of the method (arXiv 2110.12308, abstract only): start from an
adversarially trained float model; at a fixed bit-width, choose each layer's
quantization parameters with a metric built on Lipschitz constants, layer by
layer, without retraining, so that the adversarial and the quantization
losses are minimised together. The paper's losses and metric are not in any
text we hold; what follows is our reconstruction, every choice stated.

The bound. Write the network as layers h_l = phi_l(A_l h_{l-1}) with
1-Lipschitz activations phi_l and linear maps A_l (a Dense or Conv kernel,
with the per-channel scale |gamma| / sqrt(var + eps) of a BatchNorm that
directly follows it folded in). Quantizing layer l with setting c (a
clipping bound for its kernel and one for its input activation, at the
fixed bit-width) replaces A_l by a quantized map of Lipschitz constant
L_l(c) = ||A_l^(c)||_2 and adds an error e_l(c) = ||A_l x - A_l^(c) Q_c(x)||
at the float input x. With an input perturbation of norm E_0 (the
adversarial budget), the perturbation of the quantized network's layer l
output obeys

  E_l = L_l(c_l) * E_{l-1} + e_l(c_l),    so
  E_L = E_0 * prod_l L_l + sum_l e_l * prod_{k > l} L_k,

i.e. the adversarial term plus each layer's quantization error weighted by
the Lipschitz bound (product of spectral norms) of what follows it.

The selection. Each E_l is non-decreasing in E_{l-1} (L_l >= 0), so choosing
c_l to minimise E_l given the minimal E_{l-1}, in forward order, gives the
global minimum of E_L over all combinations of settings: the greedy
layer-by-layer pass *is* the exhaustive search (`brute_force` checks it on
small cases). Weighting by the downstream product changes nothing per layer
(it multiplies E_l), but the layer's own L_l(c) trades its quantization
error against the amplification of everything arriving from below: tighter
weight clipping lowers L_l and costs error.

Choices we made (not from the paper):
* Settings: fractions of the calibrated max |w| (per tensor or channel, as
  the quantization spec says) and of the calibration max |x| of the input;
  `w_fracs` x `a_fracs` candidates per layer; 1.0 (min-max, the "uniform"
  baseline) is always one of them.
* L_l: spectral norm by power iteration, of the conv operator on the
  layer's input shape ('operator', the exact constant) or of the kernel
  reshaped to a matrix ('matrix').
* e_l: root mean square over calibration images of the per-image L2 error,
  at the float (unperturbed) inputs.
* E_0: the L2 size, at the first layer's input (after the model's input
  normalisation), of an L-inf perturbation of size `eps` (a random sign
  pattern attains the L-inf ball's largest L2 norm).
* Propagation: 'bound' feeds each layer the recursion's E_{l-1} (the
  provable scheme above; layers in execution order, residual and attention
  structure ignored); 'measured' (the default) feeds the RMS perturbation
  actually observed at the layer's input when the input is perturbed by the
  random sign pattern and the layers before it are quantized with their
  chosen settings (respects the architecture; greedy, no optimality claim).
  Why 'measured' is the default: the product of spectral norms grows
  geometrically with depth (E_L ~ 4e6 for the 4-block sample ViT at
  eps = 8/255, against a measured logit perturbation of ~5), so under
  'bound' every layer past the first few only minimises its own L_l and
  takes the tightest weight clipping on offer, which cost that ViT 25
  points of clean accuracy at w4a4; fed measured perturbations, the same
  criterion kept (and slightly improved) the MSE-calibrated accuracy.
* Attention einsums (no weights) keep their ordinary calibration.
"""

import dataclasses
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from robustmq_jax.defenses import lipschitz
from robustmq_jax.defenses.layers import apply_layer
from robustmq_jax.defenses.layers import get_kernel
from robustmq_jax.defenses.layers import input_capture
from robustmq_jax.defenses.layers import weight_layers
from robustmq_jax.defenses.layers import WeightLayer
from robustmq_jax.defenses.selection import brute_force  # pylint: disable=unused-import
from robustmq_jax.defenses.selection import chain_bound
from robustmq_jax.defenses.selection import LayerTable
from robustmq_jax.defenses.selection import select_chain
from robustmq_jax.models.ops import Ops
from robustmq_jax.models.ops import Role
from robustmq_jax.quant import reference
from robustmq_jax.quant.plan import LayerQuant
from robustmq_jax.quant.plan import TensorQuant

PROPAGATIONS = ('bound', 'measured')
LIPSCHITZ_MODES = ('operator', 'matrix')
_BN_EPS = 1e-5


@dataclasses.dataclass(frozen=True)
class Settings:
  """LAAQ hyper-parameters (`config.quant.laaq`).

  Attributes:
    w_fracs: kernel clipping bounds, as fractions of max |w|.
    a_fracs: input clipping bounds, as fractions of the calibration max |x|.
    eps: L-inf input budget (pixels in [0, 1]) that sets E_0 (the
      adversarial training budget by default); 0 gives a purely
      quantization-error-driven selection.
    lipschitz: 'operator' or 'matrix' (see module docstring).
    propagation: 'bound' or 'measured'.
    iters: power iterations per spectral norm.
    fold_bn: fold a following BatchNorm's scale into the layer.
  """
  w_fracs: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
  a_fracs: tuple[float, ...] = (1.0, 0.8, 0.6, 0.45, 0.3, 0.2)
  eps: float = 4 / 255
  lipschitz: str = 'operator'
  propagation: str = 'measured'
  iters: int = 30
  fold_bn: bool = True


# ----------------------------------------------------------------- tables --


def bn_scale(variables: Any, path: str) -> np.ndarray | None:
  """|gamma| / sqrt(var + eps) of the BatchNorm following conv `path`.

  Our ResNets name a conv's BatchNorm by replacing 'conv' with 'bn' in the
  last path component (conv1 -> bn1, downsample_conv -> downsample_bn).

  Returns:
    The per-channel scale, or None when there is no such BatchNorm.
  """
  parts = path.split('/')
  if 'conv' not in parts[-1]:
    return None
  bn = parts[:-1] + [parts[-1].replace('conv', 'bn')]
  try:
    p, s = variables['params'], variables['batch_stats']
    for part in bn:
      p, s = p[part], s[part]
    gamma = np.asarray(p['scale'], np.float32)
    var = np.asarray(s['var'], np.float32)
  except (KeyError, TypeError):
    return None
  return np.abs(gamma) / np.sqrt(var + _BN_EPS)


def _scales(amax, fracs, tq: TensorQuant) -> np.ndarray:
  """[n, *amax.shape] scales of the candidate bounds."""
  return np.stack([np.asarray(reference.scale_from_bound(
      np.asarray(amax, np.float32) * f, tq.bits, tq.unsigned), np.float32)
                   for f in fracs])


def _fq(x, scale, tq: TensorQuant | None):
  if tq is None:
    return x
  return reference.fake_quant(x, scale, tq.bits, tq.unsigned)


def _error_fn(layer: WeightLayer, lq: LayerQuant):
  """Jitted (x, kernel, out_scale, w_scales, a_scales) -> [nw, na] SSE."""

  def one(x, y, kernel, out_scale, ws, a_s):
    d = (apply_layer(layer, _fq(x, a_s, lq.lhs), _fq(kernel, ws, lq.rhs))
         - y) * out_scale
    return jnp.sum(jnp.square(d))

  def run(x, kernel, out_scale, w_scales, a_scales):
    y = apply_layer(layer, x, kernel)
    per_w = lambda ws: jax.vmap(lambda a_s: one(x, y, kernel, out_scale, ws,
                                                a_s))(a_scales)
    return lax.map(per_w, w_scales)

  return jax.jit(run)


def _lips(kernel, layer, lq, w_scales, out_scale, mode, iters):
  out = []
  for ws in w_scales:
    k = _fq(jnp.asarray(kernel), ws, lq.rhs) * out_scale
    out.append(float(lipschitz.layer_norm(k, layer, mode=mode, iters=iters)))
  return np.asarray(out, np.float64)


def _sign_perturbation(images: np.ndarray, eps: float, seed: int):
  rng = np.random.default_rng(seed)
  sign = rng.choice(np.float32([-1.0, 1.0]), size=images.shape)
  return np.clip(images + eps * sign, 0.0, 1.0).astype(np.float32)


def _rms(sums: float, n: int) -> float:
  return float(np.sqrt(sums / max(n, 1)))


@dataclasses.dataclass
class Result:
  """What LAAQ chose.

  Attributes:
    scales: Role path -> {'lhs': input scale, 'rhs': kernel scale} for the
      quantized operands of every weight layer (the format of
      `robustmq_jax.quant.calibration.Calibration.scales`).
    choices: Role path -> {'w_frac', 'a_frac', 'lip', 'err', 'e_in',
      'e_out'} (floats) for the report.
    e0: the input perturbation size E_0.
    bound: E_L of the chosen settings (recursion, 'bound' semantics).
    bound_uniform: E_L with every fraction 1.0 (min-max calibration).
  """
  scales: dict[str, dict[str, np.ndarray]]
  choices: dict[str, dict[str, float]]
  e0: float
  bound: float
  bound_uniform: float


@dataclasses.dataclass
class Analysis:
  """Everything the selection reads (see `analyse`).

  Attributes:
    tables: one LayerTable per weight layer of the plan, in execution order.
    scales: Role path -> ([nw] kernel scales, [na] input scales).
    e0: the input perturbation size E_0.
    clean_inputs: per batch, Role path -> float layer input.
    perturbed: per batch, the sign-perturbed images.
    n: number of calibration images.
  """
  tables: list[LayerTable]
  scales: dict[str, tuple[np.ndarray, np.ndarray]]
  e0: float
  clean_inputs: list[dict[str, np.ndarray]]
  perturbed: list[np.ndarray]
  n: int


def analyse(module_fn: Callable[[Ops], nn.Module], variables: Any,
            batches: Sequence[np.ndarray], plan: dict[str, LayerQuant],
            settings: Settings = Settings(), *, seed: int = 0) -> Analysis:
  """Candidate tables of every weight layer (errors, Lipschitz constants).

  Args:
    module_fn: ops -> the model (float ops are passed in for the analysis).
    variables: the (adversarially trained) float model's variables.
    batches: calibration images, float32 NHWC in [0, 1], a few batches.
    plan: Role path -> LayerQuant (bits, grid sign, weight scale axes) from
      `robustmq_jax.quant.plan.make_plan`. A layer whose operands are both
      float gets one candidate (error 0, its float Lipschitz constant).
    settings: the hyper-parameters.
    seed: seed of the random sign perturbation.

  Returns:
    The analysis.
  """
  s = settings
  layers = weight_layers(module_fn, variables, batches[0].shape[1:])
  capture = input_capture(module_fn)
  params = variables['params']
  n = sum(len(b) for b in batches)
  perturbed = [_sign_perturbation(b, s.eps, seed + i)
               for i, b in enumerate(batches)]
  clean_inputs = [jax.device_get(capture(variables, b)[1]) for b in batches]
  first = next(iter(layers))
  e0 = 0.0
  if s.eps > 0:
    e0 = _rms(sum(float(np.sum((capture(variables, p)[1][first] -
                                c[first]) ** 2))
                  for p, c in zip(perturbed, clean_inputs)), n)

  tables, scales = [], {}
  for path in [p for p in layers if p in plan]:
    layer, lq = layers[path], plan[path]
    kernel = np.asarray(get_kernel(params, path), np.float32)
    out_scale = bn_scale(variables, path) if s.fold_bn else None
    out_scale = np.float32(1.0) if out_scale is None else out_scale
    w_fracs = np.asarray(s.w_fracs if lq.rhs else (1.0,), np.float64)
    a_fracs = np.asarray(s.a_fracs if lq.lhs else (1.0,), np.float64)
    w_scales = (_scales(reference.absmax(kernel, lq.rhs.shared_axes),
                        w_fracs, lq.rhs) if lq.rhs
                else np.ones((1,), np.float32))
    amax = max(float(np.max(np.abs(c[path]))) for c in clean_inputs)
    a_scales = (_scales(np.float32(amax), a_fracs, lq.lhs) if lq.lhs
                else np.ones((1,), np.float32))
    err_fn = _error_fn(layer, lq)
    sse = sum(np.asarray(err_fn(c[path], kernel, out_scale, w_scales,
                                a_scales), np.float64)
              for c in clean_inputs)
    tables.append(LayerTable(
        path, w_fracs, a_fracs,
        _lips(kernel, layer, lq, w_scales, out_scale, s.lipschitz, s.iters),
        np.sqrt(sse / n)))
    scales[path] = (w_scales, a_scales)
  return Analysis(tables, scales, e0, clean_inputs, perturbed, n)


def select(module_fn: Callable[[Ops], nn.Module], variables: Any,
           batches: Sequence[np.ndarray], plan: dict[str, LayerQuant],
           settings: Settings = Settings(), *, seed: int = 0) -> Result:
  """Chooses every weight layer's clipping bounds (see module docstring).

  Args:
    module_fn: ops -> the model.
    variables: the (adversarially trained) float model's variables.
    batches: calibration images, float32 NHWC in [0, 1].
    plan: Role path -> LayerQuant (see `analyse`).
    settings: the hyper-parameters.
    seed: seed of the random sign perturbation.

  Returns:
    The selection.
  """
  a = analyse(module_fn, variables, batches, plan, settings, seed=seed)
  if settings.propagation == 'bound':
    picks, es = select_chain(a.tables, a.e0)
    e_ins = [a.e0] + es[:-1]
  else:
    picks, e_ins, es = _select_measured(module_fn, variables, a, plan)
  scales, choices = {}, {}
  for t, (iw, ia), e_in, e_out in zip(a.tables, picks, e_ins, es):
    lq = plan[t.path]
    w_scales, a_scales = a.scales[t.path]
    sc = {}
    if lq.lhs is not None:
      sc['lhs'] = np.asarray(a_scales[ia], np.float32)
    if lq.rhs is not None:
      sc['rhs'] = np.asarray(w_scales[iw], np.float32)
    if sc:
      scales[t.path] = sc
    choices[t.path] = {'w_frac': float(t.w_fracs[iw]),
                       'a_frac': float(t.a_fracs[ia]),
                       'lip': float(t.lip[iw]), 'err': float(t.err[iw, ia]),
                       'e_in': float(e_in), 'e_out': float(e_out)}
  uniform = [(int(np.argmax(t.w_fracs)), int(np.argmax(t.a_fracs)))
             for t in a.tables]
  return Result(scales, choices, a.e0, chain_bound(a.tables, a.e0, picks),
                chain_bound(a.tables, a.e0, uniform))


class _FakeQuantOps(Ops):
  """Reference fake-quant of the weight layers, each switched on by a flag.

  `state` maps a Role path to traced (kernel scale, input scale, on) arrays,
  so one compiled forward serves every step of the greedy pass; `values`
  receives every weight layer's input at trace time.
  """

  def __init__(self, plan: dict[str, LayerQuant], state: dict[str, Any]):
    self.plan = plan
    self.state = state
    self.values: dict[str, jax.Array] = {}

  def _operands(self, path, lhs, rhs):
    self.values.setdefault(path, lhs)
    if path not in self.state:
      return lhs, rhs
    ws, a_s, on = self.state[path]
    lq = self.plan[path]
    return (jnp.where(on, _fq(lhs, a_s, lq.lhs), lhs),
            jnp.where(on, _fq(rhs, ws, lq.rhs), rhs))

  def dot_general_cls(self, role: Role) -> Any:
    def dot(lhs, rhs, dimension_numbers, **kwargs):
      lhs, rhs = self._operands(role.path, lhs, rhs)
      return lax.dot_general(lhs, rhs, dimension_numbers, **kwargs)
    return lambda: dot

  def conv_general_dilated_cls(self, role: Role) -> Any:
    def conv(lhs, rhs, *args, **kwargs):
      lhs, rhs = self._operands(role.path, lhs, rhs)
      return lax.conv_general_dilated(lhs, rhs, *args, **kwargs)
    return lambda: conv


def _select_measured(module_fn, variables, a: Analysis, plan):
  """Greedy selection fed by measured input perturbations."""
  paths = [t.path for t in a.tables]

  @jax.jit
  def inputs(v, x, state):
    ops = _FakeQuantOps(plan, state)
    module_fn(ops).apply(v, x, train=False)
    return {p: ops.values[p] for p in paths}

  state = {t.path: (a.scales[t.path][0][0], a.scales[t.path][1][0],
                    np.bool_(False)) for t in a.tables}
  picks, e_ins, es = [], [], []
  for t in a.tables:
    sq = sum(float(np.sum((np.asarray(inputs(variables, p, state)[t.path]) -
                           c[t.path])**2))
             for p, c in zip(a.perturbed, a.clean_inputs))
    e_in = _rms(sq, a.n)
    total = t.objective(e_in)
    iw, ia = np.unravel_index(int(np.argmin(total)), total.shape)
    picks.append((int(iw), int(ia)))
    e_ins.append(e_in)
    es.append(float(total[iw, ia]))
    w_scales, a_scales = a.scales[t.path]
    state[t.path] = (w_scales[iw], a_scales[ia], np.bool_(True))
  return picks, e_ins, es


def summary_rows(result: Result) -> list[dict[str, Any]]:
  """One dict per layer (path + choices), for reports and model metadata."""
  return [dict(path=p, **c) for p, c in result.choices.items()]
