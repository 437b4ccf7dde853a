"""Post-training calibration: activation statistics -> static scales.

A recording `Ops` runs the float model on training batches; each contraction
reduces its operands to statistics inside the jitted step (min, max, max |x|,
a percentile, squared errors of candidate bounds), so no activation leaves
the device. Three activation rules:

  'minmax'      bound = max |x| over all calibration batches;
  'percentile'  bound = mean over batches of the p-th percentile of |x|;
  'mse'         bound = argmin over {max|x| * k / G, k = 1..G} of the summed
                squared fake-quantization error (a second pass).

Signs (MQBench's adaptive sign): an activation whose minimum over all batches
is >= 0 gets the unsigned grid. Weights: per-tensor or per-channel max |w|
('minmax') or the MSE-optimal bound ('mse').
"""

import dataclasses
import math
from typing import Any, Callable, Iterator

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from robustmq_jax.models.ops import Ops
from robustmq_jax.models.ops import Role
from robustmq_jax.quant import plan as plan_lib
from robustmq_jax.quant import reference
from robustmq_jax.quant.plan import Plan
from robustmq_jax.quant.plan import Site
from robustmq_jax.quant.spec import QuantSpec

CALIB = 'calib'
# stats_fn(path, side, x, is_weight, contracting) -> dict of arrays.
StatsFn = Callable[[str, str, jax.Array, bool, tuple[int, ...]],
                   dict[str, jax.Array]]


class _RecordSite(nn.Module):
  """Float contraction that sows operand statistics."""
  role: Role
  stats_fn: StatsFn
  sink: Callable[[Site], None]  # Called at trace time with what was seen.

  def _record(self, lhs, rhs, rhs_contracting):
    path = self.role.path
    self.sink(Site(self.role, tuple(rhs.shape),
                   tuple(int(a) for a in rhs_contracting)))
    weight = self.role.kind != 'einsum'
    self.sow(CALIB, 'lhs', self.stats_fn(path, 'lhs', lhs, False, ()))
    self.sow(CALIB, 'rhs', self.stats_fn(path, 'rhs', rhs, weight,
                                         tuple(rhs_contracting)))


class _RecordDot(_RecordSite):

  @nn.compact
  def __call__(self, lhs, rhs, dimension_numbers, precision=None,
               preferred_element_type=None):
    self._record(lhs, rhs, dimension_numbers[0][1])
    return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                           preferred_element_type=preferred_element_type)


class _RecordConv(_RecordSite):

  @nn.compact
  def __call__(self, lhs, rhs, *args, **kwargs):
    self._record(lhs, rhs, tuple(range(rhs.ndim - 1)))
    return lax.conv_general_dilated(lhs, rhs, *args, **kwargs)


class _RecordEinsum(_RecordSite):

  @nn.compact
  def __call__(self, eqn, lhs, rhs):
    self._record(lhs, rhs, ())
    return jnp.einsum(eqn, lhs, rhs)


class RecordingOps(Ops):
  """Float contractions that sow statistics into the 'calib' collection."""

  def __init__(self, stats_fn: StatsFn):
    self.stats_fn = stats_fn
    self.sites: dict[str, Site] = {}

  def _add(self, site: Site) -> None:
    self.sites[site.role.path] = site

  def _make(self, cls, role, name):
    return lambda: cls(role, self.stats_fn, self._add, name=name)

  def dot_general_cls(self, role: Role) -> Any:
    return self._make(_RecordDot, role, 'q')

  def conv_general_dilated_cls(self, role: Role) -> Any:
    return self._make(_RecordConv, role, 'q')

  def einsum(self, role: Role):
    make = self._make(_RecordEinsum, role, role.path.split('/')[-1])
    return lambda eqn, a, b: make()(eqn, a, b)


def _percentile_abs(x: jax.Array, p: float) -> jax.Array:
  """p-th percentile of |x| (nearest rank from the top)."""
  a = jnp.abs(x).reshape(-1)
  k = max(1, int(math.ceil(a.size * (1.0 - p / 100.0))))
  if k <= 4096:
    return jnp.min(lax.top_k(a, k)[0])
  return jnp.quantile(a, p / 100.0, method='higher')


def _tree_paths(tree, prefix=()) -> Iterator[tuple[tuple[str, ...], Any]]:
  if isinstance(tree, dict) or hasattr(tree, 'items'):
    for k, v in tree.items():
      yield from _tree_paths(v, prefix + (k,))
  else:
    yield prefix, tree


def _collect(module_fn, variables, batches, stats_fn):
  """Runs the recording model over batches; returns (sites, per-batch stats).

  Returns:
    sites: path -> Site; stats: list over batches of {(path, side): dict}.
  """
  ops = RecordingOps(stats_fn)
  module = module_fn(ops)

  @jax.jit
  def step(v, x):
    _, state = module.apply(v, x, train=False, mutable=[CALIB])
    return state[CALIB]

  out = []
  for x in batches:
    calib = jax.device_get(step(variables, x))
    per = {}
    for path_parts, value in _tree_paths(calib):
      # .../<site module>/<side>: a tuple of one sown dict.
      side = path_parts[-1]
      if side not in ('lhs', 'rhs'):
        continue
      per[('/'.join(path_parts[:-1]), side)] = value[0]
    out.append(per)
  # Map module paths (path/q or einsum path) back to Role paths.
  by_module = {}
  for path, site in ops.sites.items():
    module_path = path if site.role.kind == 'einsum' else path + '/q'
    by_module[module_path] = path
  stats = [{(by_module[m], side): v for (m, side), v in per.items()}
           for per in out]
  return dict(ops.sites), stats


@dataclasses.dataclass
class Calibration:
  """Calibration result.

  Attributes:
    sites: Role path -> Site (every contraction of the model).
    plan: Role path -> LayerQuant.
    scales: Role path -> {'lhs': scale (), 'rhs': scale} (numpy float32).
    act_bounds: (path, side) -> activation clipping bound.
  """
  sites: dict[str, Site]
  plan: Plan
  scales: dict[str, dict[str, np.ndarray]]
  act_bounds: dict[tuple[str, str], float]


def calibration_batches(images: np.ndarray, spec: QuantSpec,
                        seed: int = 0) -> list[np.ndarray]:
  """`num_calib_batches` float batches drawn without replacement."""
  rng = np.random.default_rng(seed)
  n = min(len(images), spec.num_calib_batches * spec.calib_batch_size)
  idx = rng.permutation(len(images))[:n]
  bs = spec.calib_batch_size
  return [images[idx[i:i + bs]].astype(np.float32) / 255.0
          for i in range(0, n, bs)]


def weight_bound(w: jax.Array, tq, method: str, grid: int) -> np.ndarray:
  """Clipping bound of a kernel (keepdims over `tq.shared_axes`)."""
  axes = tq.shared_axes
  w = np.asarray(w, np.float32)
  amax = np.max(np.abs(w), axis=axes, keepdims=True)
  if method != 'mse':
    return amax
  # reference.mse_bound on the host (no compile per kernel shape).
  best, best_err = amax, None
  for k in range(1, grid + 1):
    bound = (amax * np.float32(k / grid)).astype(np.float32)
    s = _scale_np(bound, tq.bits, tq.unsigned)
    q = reference.quantize_np(w, s, tq.bits, tq.unsigned)
    err = np.sum((reference.dequantize_np(q, s) - w)**2, axis=axes,
                 keepdims=True)
    if best_err is None:
      best, best_err = bound, err
    else:
      better = err < best_err
      best = np.where(better, bound, best)
      best_err = np.where(better, err, best_err)
  return best.astype(np.float32)


def calibrate(module_fn: Callable[[Ops], nn.Module], variables: Any,
              images: np.ndarray, spec: QuantSpec, *, seed: int = 0,
              weight_calibration: str | None = None) -> Calibration:
  """PTQ calibration of a float model.

  Args:
    module_fn: ops -> the model built with those ops.
    variables: the float variables.
    images: uint8 NHWC training images.
    spec: the quantization spec (bits, calibration rule, batches).
    seed: batch sampling seed.
    weight_calibration: overrides `spec.weight_calibration`.

  Returns:
    The plan and the static scales.
  """
  batches = calibration_batches(images, spec, seed)
  p = spec.percentile

  def stats1(path, side, x, is_weight, contracting):
    del path, side, contracting
    if is_weight:
      return {}
    d = {'min': jnp.min(x), 'max': jnp.max(x), 'amax': jnp.max(jnp.abs(x))}
    if spec.calibration == 'percentile':
      d['pct'] = _percentile_abs(x, p)
    return d

  sites, stats = _collect(module_fn, variables, batches, stats1)
  nonneg = {}
  amax = {}
  for key in stats[0]:
    if not stats[0][key]:
      continue
    nonneg[key] = min(float(s[key]['min']) for s in stats) >= 0.0
    amax[key] = max(float(s[key]['amax']) for s in stats)
  plan = plan_lib.make_plan(sites, spec, nonneg)

  def act_tq(path, side) -> Any:
    layer = plan[path]
    if side == 'lhs':
      return layer.lhs
    return None if layer.rhs_is_weight else layer.rhs

  bounds = {}
  for key in amax:
    if act_tq(*key) is None:
      continue
    if spec.calibration == 'percentile':
      bounds[key] = float(np.mean([float(s[key]['pct']) for s in stats]))
    else:
      bounds[key] = amax[key]
  if spec.calibration == 'mse' and bounds:
    bounds = _mse_bounds(module_fn, variables, batches, spec, bounds, act_tq)

  w_method = weight_calibration or spec.weight_calibration
  params = _params_by_path(variables)
  scales: dict[str, dict[str, np.ndarray]] = {}
  for path, layer in plan.items():
    s = {}
    if layer.lhs is not None:
      s['lhs'] = _act_scale(bounds[(path, 'lhs')], layer.lhs)
    if layer.rhs is not None:
      if layer.rhs_is_weight:
        w = params[path]['kernel']
        bound = weight_bound(w, layer.rhs, w_method, spec.mse_grid)
        s['rhs'] = _scale_np(bound, layer.rhs.bits, False)
      else:
        s['rhs'] = _act_scale(bounds[(path, 'rhs')], layer.rhs)
    if s:
      scales[path] = s
  return Calibration(sites, plan, scales, bounds)


def _scale_np(bound, bits: int, unsigned: bool) -> np.ndarray:
  """`reference.scale_from_bound` on the host (float32)."""
  bound = np.asarray(bound, np.float32)
  bound = np.where(bound > 0, bound, np.float32(1)).astype(np.float32)
  return (bound / np.float32(reference.half_range(bits, unsigned))).astype(
      np.float32)


def _act_scale(bound: float, tq) -> np.ndarray:
  return _scale_np(bound, tq.bits, tq.unsigned)


def _mse_bounds(module_fn, variables, batches, spec, bounds, act_tq):
  """Second pass: summed squared error of each candidate bound."""
  fracs = np.arange(1, spec.mse_grid + 1, dtype=np.float32) / spec.mse_grid

  def stats2(path, side, x, is_weight, contracting):
    del is_weight, contracting
    tq = act_tq(path, side) if (path, side) in bounds else None
    if tq is None:
      return {}
    amax = jnp.float32(bounds[(path, side)])

    def err(frac):
      s = reference.scale_from_bound(amax * frac, tq.bits, tq.unsigned)
      return jnp.sum((reference.fake_quant(x, s, tq.bits, tq.unsigned) - x)**2)

    return {'sse': lax.map(err, jnp.asarray(fracs))}

  _, stats = _collect(module_fn, variables, batches, stats2)
  out = {}
  for key, amax in bounds.items():
    sse = np.sum([np.asarray(s[key]['sse'], np.float64) for s in stats],
                 axis=0)
    out[key] = float(np.float32(amax) * fracs[int(np.argmin(sse))])
  return out


def _params_by_path(variables) -> dict[str, Any]:
  """'a/b/c' -> the params subtree at that module path."""
  out = {}

  def walk(tree, prefix):
    if not hasattr(tree, 'items'):
      return
    if any(not hasattr(v, 'items') for v in tree.values()):
      out['/'.join(prefix)] = tree
    for k, v in tree.items():
      walk(v, prefix + (k,))

  walk(variables['params'], ())
  return out


def sites_of(module_fn: Callable[[Ops], nn.Module], variables: Any,
             image_shape: tuple[int, ...]) -> dict[str, Site]:
  """Every contraction of a model (traced once, nothing computed)."""
  ops = RecordingOps(lambda *a: {})
  module = module_fn(ops)
  jax.eval_shape(
      lambda v, x: module.apply(v, x, train=False, mutable=[CALIB]),
      variables, jax.ShapeDtypeStruct((1,) + tuple(image_shape), jnp.float32))
  return dict(ops.sites)

