"""Float model + params -> its quantized twin (`QuantizedModel`).

`quantize_model` runs PTQ calibration or QAT; `QuantizedModel` builds the
evaluated (fake-quant, straight-through) forward and AQT's served integer
forward from one plan and one set of variables:

  variables = {'params': float params with every quantized kernel snapped to
               its grid (q * scale), 'batch_stats': ..., 'quant': static
               scales per contraction}.
"""

import dataclasses
import json
from typing import Any, Callable

from absl import logging
import flax
import jax
import jax.numpy as jnp
import numpy as np

from robustmq_jax import models
from robustmq_jax.quant import aqt_backend
from robustmq_jax.quant import bnfold
from robustmq_jax.quant import calibration
from robustmq_jax.quant import plan as plan_lib
from robustmq_jax.quant import reference
from robustmq_jax.quant.spec import QuantSpec

ApplyFn = Callable[[Any, jax.Array], jax.Array]

# spec.backend -> (plan, mode, scales) -> an `Ops` of quantized contractions.
# A second backend (Qwix) registers here: it reads the same plan, scales and
# modes ('fake', 'int', 'convert', 'serve'); models and the runner are
# unchanged.
BACKENDS: dict[str, Callable[..., models.Ops]] = {
    'aqt': aqt_backend.AqtOps,
}


def to_numpy(variables: Any) -> dict[str, Any]:
  """A (possibly frozen, device-resident) variable tree as numpy dicts."""
  return jax.tree.map(np.asarray,
                      flax.core.unfreeze(jax.device_get(variables)))


def _node(tree: dict[str, Any], path: str, create: bool = False):
  for p in path.split('/'):
    if create:
      tree = tree.setdefault(p, {})
    elif p not in tree:
      raise KeyError(path)
    else:
      tree = tree[p]
  return tree


def _per_operand(plan: plan_lib.Plan, names: tuple[str, str],
                 value: Callable[[str, str, Any], Any]) -> dict[str, Any]:
  """A variable collection: `value(path, side, tq)` under names[side] at
  each quantized operand's module path (`plan.scale_module_path`)."""
  out: dict[str, Any] = {}
  for path, layer in plan.items():
    for side, name in zip(('lhs', 'rhs'), names):
      tq = getattr(layer, side)
      if tq is not None:
        node = _node(out, plan_lib.scale_module_path(layer), create=True)
        node[name] = value(path, side, tq)
  return out


def quant_collection(plan: plan_lib.Plan,
                     scales: dict[str, dict[str, Any]]) -> dict[str, Any]:
  """The 'quant' variable collection for `scales` (Role path keyed)."""
  return _per_operand(
      plan, (plan_lib.LHS_SCALE, plan_lib.RHS_SCALE),
      lambda path, side, tq: np.asarray(scales.get(path, {})[side],
                                        np.float32))


def grid_collection(plan: plan_lib.Plan) -> dict[str, Any]:
  """The 'quant_grid' collection of `plan`: float32 [qmin, qmax] per operand.

  What a model built with `traced_grid=True` reads instead of its plan's
  constants; it sits beside the scales (same module paths).
  """
  return _per_operand(plan, (plan_lib.LHS_GRID, plan_lib.RHS_GRID),
                      lambda path, side, tq: tq.grid)


def scales_of(plan: plan_lib.Plan, variables: dict[str, Any]
              ) -> dict[str, dict[str, np.ndarray]]:
  """Role path -> {'lhs', 'rhs'} scales, read from the 'quant' collection."""
  quant = variables.get(plan_lib.QUANT_COLLECTION, {})
  out = {}
  for path, layer in plan.items():
    if not layer.quantized:
      continue
    node = _node(quant, plan_lib.scale_module_path(layer))
    out[path] = {side: np.asarray(node[name]) for side, name in
                 (('lhs', plan_lib.LHS_SCALE), ('rhs', plan_lib.RHS_SCALE))
                 if name in node}
  return out


def snap_kernels(plan: plan_lib.Plan, params: dict[str, Any],
                 scales: dict[str, dict[str, Any]]) -> dict[str, Any]:
  """Replaces every quantized kernel by q * scale (what AQT evaluates)."""
  params = jax.tree.map(np.asarray, params)
  for path, layer in plan.items():
    if layer.rhs is None or not layer.rhs_is_weight:
      continue
    try:
      node = _node(params, path)
    except KeyError as e:
      raise ValueError(
          f'Role path {path!r} is not a Flax module path with a kernel; '
          'models must name roles after their module paths '
          '(robustmq_jax/models/ops.py).') from e
    s = scales[path]['rhs']
    q = reference.quantize_np(node['kernel'], s, layer.rhs.bits)
    node['kernel'] = reference.dequantize_np(q, s)
  return params


@dataclasses.dataclass
class QuantizedModel:
  """A model at one precision.

  Attributes:
    model_name: registry name.
    num_classes: classifier width.
    model_kwargs: model settings.
    spec: the QuantSpec.
    plan: Role path -> LayerQuant (empty for fp32).
    variables: see the module docstring.
    meta: provenance (method, calibration, QAT losses, digests).
  """
  model_name: str
  num_classes: int
  model_kwargs: dict[str, Any]
  spec: QuantSpec
  plan: plan_lib.Plan
  variables: dict[str, Any]
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)

  def module(self, mode: str = 'fake', traced_grid: bool = False):
    """The Flax model with AQT contractions in `mode` (see AqtOps)."""
    ops = BACKENDS[self.spec.backend](self.plan, mode,
                                      scales_of(self.plan, self.variables),
                                      traced_grid=traced_grid)
    return models.get_model(self.model_name, num_classes=self.num_classes,
                            ops=ops, **dict(self.model_kwargs))

  def apply_fn(self, mode: str = 'fake', traced_grid: bool = False
               ) -> ApplyFn:
    """``apply(variables, images) -> logits`` (images in [0, 1]).

    With `traced_grid`, the integer grids are read from the variables'
    'quant_grid' collection (`grid_variables`), so that one compiled
    program serves every bit width of the model.
    """
    module = self.module(mode, traced_grid)

    def apply(variables, images):
      return module.apply(variables, images, train=False)

    return apply

  def program_key(self) -> tuple[Any, ...]:
    """Equal for models whose traced-grid programs are the same (`apply_fn`
    with `traced_grid`): same model and settings, plans equal but for bits."""
    # JSON: a checkpoint read back has lists where the config had tuples.
    kwargs = json.dumps(self.model_kwargs, sort_keys=True, default=repr)
    return (self.spec.backend, self.model_name, self.num_classes, kwargs,
            plan_lib.structure(self.plan))

  def grid_variables(self) -> dict[str, Any]:
    """`variables` plus the 'quant_grid' collection (see `apply_fn`)."""
    if not self.plan:
      return self.variables
    return dict(self.variables,
                **{plan_lib.GRID_COLLECTION: grid_collection(self.plan)})

  def image_size(self) -> int:
    return models.model_info(self.model_name).image_size

  def convert_fn(self) -> Callable[[Any, jax.Array], tuple[Any, Any]]:
    """AQT's jitted CONVERT step: (grid_variables(), images) -> (logits,
    {'aqt': ...}). With grids and kernel scales read from the variables it
    is the same function for every model with this `program_key`, so a
    caller may reuse one across bit widths (traced once)."""
    convert = self.module('convert', traced_grid=True)
    return jax.jit(lambda v, x: convert.apply(
        v, x, train=False, mutable=['aqt']))

  def serve(self, convert_fn: Callable[..., Any] | None = None
            ) -> tuple[ApplyFn, dict[str, Any]]:
    """AQT's converted/served model: (serve_apply, serve_variables).

    CONVERT writes every quantized kernel as AQT integers + scale into the
    'aqt' collection; SERVE reads them (the float kernels it is handed are
    ignored by the forward; they carry the straight-through gradient).

    Args:
      convert_fn: `convert_fn()` of a model with the same `program_key`
        (default: this model's own).
    """
    convert_fn = convert_fn or self.convert_fn()
    size = self.image_size()
    dummy = jnp.zeros((1, size, size, 3), jnp.float32)
    variables = self.grid_variables()
    _, state = convert_fn(variables, dummy)
    serve_variables = dict(variables, aqt=to_numpy(state['aqt']))
    return self.apply_fn('serve', traced_grid=True), serve_variables


def float_twin(model_name: str, num_classes: int, model_kwargs: dict,
               variables: Any, spec: QuantSpec) -> QuantizedModel:
  """The fp32 'quantized' model: no plan, the float variables unchanged."""
  return QuantizedModel(model_name, num_classes, dict(model_kwargs), spec, {},
                        to_numpy(variables), {'method': 'float'})


def module_fn(model_name: str, num_classes: int, model_kwargs: dict):
  return lambda ops: models.get_model(model_name, num_classes=num_classes,
                                      ops=ops, **dict(model_kwargs))


def quantize_model(model_name: str, num_classes: int,
                   model_kwargs: dict[str, Any], float_variables: Any,
                   spec: QuantSpec, images: np.ndarray | None = None,
                   labels: np.ndarray | None = None, *, seed: int = 0,
                   mesh=None) -> QuantizedModel:
  """Quantizes a float model.

  Args:
    model_name: registry name.
    num_classes: classifier width.
    model_kwargs: model settings.
    float_variables: the float model's variables.
    spec: what to do (bits, method, calibration, QAT recipe).
    images: uint8 NHWC training images (calibration / QAT).
    labels: int labels (QAT).
    seed: sampling / training seed.
    mesh: device mesh for QAT (default: all devices).

  Returns:
    The quantized model.
  """
  fv = to_numpy(float_variables)
  if spec.is_float:
    return float_twin(model_name, num_classes, model_kwargs, fv, spec)
  if images is None:
    raise ValueError('calibration needs training images')
  mfn = module_fn(model_name, num_classes, model_kwargs)
  if spec.is_qat:
    from robustmq_jax.quant import qat  # pylint: disable=g-import-not-at-top
    plan, variables, meta = qat.quantization_aware_training(
        mfn, fv, images, labels, spec, seed=seed, mesh=mesh)
  else:
    meta = {'method': 'ptq', 'calibration': spec.calibration}
    if spec.bn_fold:  # Quantize the folded kernels (MQBench bnfold).
      pairs = bnfold.conv_bn_pairs(mfn(models.FLOAT_OPS), images.shape[1])
      fv = bnfold.fold_batchnorm(fv, pairs)
      meta['bn_folded'] = len(pairs)
    cal = calibration.calibrate(mfn, fv, images, spec, seed=seed)
    plan = cal.plan
    variables = {k: v for k, v in fv.items() if k != 'params'}
    variables['params'] = snap_kernels(plan, fv['params'], cal.scales)
    variables[plan_lib.QUANT_COLLECTION] = quant_collection(plan, cal.scales)
  logging.info('quantized %s to %s with %s: %d layers', model_name,
               spec.precision, spec.method,
               sum(l.quantized for l in plan.values()))
  return QuantizedModel(model_name, num_classes, dict(model_kwargs), spec,
                        plan, variables, meta)
