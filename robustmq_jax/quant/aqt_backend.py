"""The AQT backend: an `Ops` whose contractions are AQT layers.

`AqtOps(plan, mode, scales)` hands every model contraction an AQT layer:
Dense -> `AqtDotGeneral`, Conv -> `AqtConvGeneralDilated`, attention einsums
-> AQT's einsum (`aqt_dot_general.einsum` over `AqtDotGeneral`, the building
blocks of `AqtEinsum`, which itself cannot take precalibrated activation
scales). Each site reads its static scales from the ``'quant'`` collection
(``lhs_scale``, ``rhs_scale``) and hands them to AQT as incomplete QTensors.

Modes:
  'fake'    simulated: quantize both operands, dequantize, float matmul.
  'int'     integer matmuls (int8/uint8 x int8 -> int32, then rescale), with
            the kernel quantized on the fly.
  'convert' AQT CONVERT: writes the integer kernels + scales into ``'aqt'``.
  'serve'   AQT SERVE: reads the frozen integer kernels from ``'aqt'``; the
            activations are quantized on the fly as in 'int'.
AQT's conv is simulated in every mode (it convolves integer-valued floats).

Gradients: dot_generals use AQT's custom VJP with our straight-through
numerics. AQT's conv has none (google/aqt#285: exactly zero input and kernel
gradients); `conv_ste` keeps AQT's forward bit for bit and supplies the
straight-through backward: the float conv's VJP at the dequantized operands,
masked to each operand's clipping range.
"""

import functools
from typing import Any, Callable

from aqt.jax.v2 import aqt_dot_general
from aqt.jax.v2 import aqt_tensor
from aqt.jax.v2 import utils as aqt_utils
from aqt.jax.v2.flax import aqt_flax
import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from robustmq_jax.models.ops import Ops
from robustmq_jax.models.ops import Role
from robustmq_jax.quant import aqt_config
from robustmq_jax.quant import compat
from robustmq_jax.quant import reference
from robustmq_jax.quant.plan import GRID_COLLECTION
from robustmq_jax.quant.plan import LayerQuant
from robustmq_jax.quant.plan import LHS_GRID
from robustmq_jax.quant.plan import LHS_SCALE
from robustmq_jax.quant.plan import QUANT_COLLECTION
from robustmq_jax.quant.plan import RHS_GRID
from robustmq_jax.quant.plan import RHS_SCALE
from robustmq_jax.quant.plan import TensorQuant

compat.install()

MODES = ('fake', 'int', 'convert', 'serve')
QuantMode = aqt_utils.QuantMode
_FROZEN = aqt_flax.FreezerMode.CALIBRATION_AND_VALUE


def _incomplete(scale: jax.Array, ndim: int, dtype) -> aqt_tensor.QTensor:
  """A QTensor holding only a scale: AQT computes the values with it."""
  return aqt_tensor.QTensor(
      qvalue=None, scale=[aqt_config.full_rank_scale(scale, ndim)],
      scale_t=None, bias=[], dequant_dtype=dtype)


class _Site(nn.Module):
  """Shared by the three site kinds: the layer plan and its scales."""
  layer: LayerQuant
  mode: str = 'fake'
  init_scales: Any = None  # {'lhs': array, 'rhs': array} or None.
  traced_grid: bool = False  # Read [qmin, qmax] from GRID_COLLECTION.

  def _scale(self, side: str, tq: TensorQuant | None, shape) -> Any:
    if tq is None:
      return None
    name = LHS_SCALE if side == 'lhs' else RHS_SCALE
    init = (self.init_scales or {}).get(side)

    def init_fn():
      if init is not None:
        return jnp.asarray(init, jnp.float32)
      return jnp.ones(tq.scale_shape(shape), jnp.float32)

    return self.variable(QUANT_COLLECTION, name, init_fn).value

  def _grids(self) -> tuple[Any, Any]:
    """(lhs, rhs) traced [qmin, qmax], or (None, None): the plan's constants."""
    if not self.traced_grid:
      return None, None

    def grid(name, tq):
      if tq is None:
        return None
      return self.variable(GRID_COLLECTION, name,
                           lambda: jnp.asarray(tq.grid)).value

    return grid(LHS_GRID, self.layer.lhs), grid(RHS_GRID, self.layer.rhs)

  def _convert_rhs_scale(self, rs):
    """The kernel scale for AQT's CONVERT calibration (None in other modes):
    the 'quant' variable itself with traced grids (one CONVERT program for
    every bit width), else a constant."""
    if self.mode != 'convert':
      return None
    return rs if self.traced_grid else self._const_rhs_scale()

  def _const_rhs_scale(self):
    """The kernel scale as a constant, for AQT's CONVERT calibration."""
    init = (self.init_scales or {}).get('rhs')
    if init is None:
      raise ValueError(f'{self.layer.path}: mode "convert" needs the scales '
                       'at construction (AqtOps(..., scales=...)).')
    return np.asarray(init, np.float32)

  def _frozen_rhs(self) -> bool:
    return (self.mode in ('convert', 'serve') and self.layer.rhs_is_weight
            and self.layer.rhs is not None)

  def _aqt_kwargs(self, lhs, rhs, ls, rs, frozen: bool) -> dict[str, Any]:
    """AQT module arguments: static activation scales (never recalibrated);
    the kernel quantized in training mode, or frozen/served when converted.
    """
    rhs_mode = {'convert': QuantMode.CONVERT, 'serve': QuantMode.SERVE}.get(
        self.mode, QuantMode.TRAIN) if frozen else QuantMode.TRAIN
    return dict(
        prng_name=None,
        lhs_quant_mode=QuantMode.TRAIN, lhs_apply_quant_mode=False,
        lhs_qtensor=None if ls is None else _incomplete(ls, lhs.ndim,
                                                         lhs.dtype),
        rhs_quant_mode=rhs_mode, rhs_apply_quant_mode=frozen,
        rhs_qtensor=(None if (rs is None or frozen) else
                     _incomplete(rs, rhs.ndim, rhs.dtype)),
        rhs_freeze_mode=_FROZEN if frozen else aqt_flax.FreezerMode.NONE,
        name='aqt')


class AqtDotGeneralSite(_Site):
  """`dot_general_cls` for nn.Dense / nn.DenseGeneral."""

  @nn.compact
  def __call__(self, lhs, rhs, dimension_numbers, precision=None,
               preferred_element_type=None):
    del precision, preferred_element_type  # AQT picks them.
    layer = self.layer
    ls = self._scale('lhs', layer.lhs, lhs.shape)
    rs = self._scale('rhs', layer.rhs, rhs.shape)
    frozen = self._frozen_rhs()
    cfg = aqt_config.dot_general_config(
        layer.lhs, layer.rhs, integer=self.mode != 'fake',
        rhs_scale=self._convert_rhs_scale(rs), grids=self._grids())
    dg = aqt_flax.AqtDotGeneral(
        cfg, **self._aqt_kwargs(lhs, rhs, ls, rs, frozen))
    return dg(lhs, rhs, dimension_numbers, None, None)


def _grid(tq: TensorQuant | None, traced: Any) -> jax.Array:
  """float32 [qmin, qmax] of an operand (zeros, unused, when it is float)."""
  if tq is None:
    return jnp.zeros((2,), jnp.float32)
  return jnp.asarray(tq.grid) if traced is None else traced


def _ste_operand(x, scale, grid):
  """(dequantized x, straight-through mask) under the reference rule."""
  if grid is None:
    return x, jnp.ones_like(x)
  q = reference.on_grid(x, scale, grid[0], grid[1])
  return (reference.dequantize(q, scale, x.dtype),
          reference.inside_range(x, scale, grid[0], grid[1]))


@functools.partial(jax.custom_vjp, nondiff_argnums=(7,))
def conv_ste(q, lhs, rhs, lhs_scale, rhs_scale, lhs_grid, rhs_grid, static):
  """Returns `q` (AQT's quantized conv output) with a straight-through VJP.

  Args:
    q: the quantized conv output (computed from stop-gradient operands).
    lhs: conv input.
    rhs: conv kernel.
    lhs_scale: input scale (broadcastable), 1.0 when the input is float.
    rhs_scale: kernel scale (keepdims), 1.0 when the kernel is float.
    lhs_grid: float32 [qmin, qmax] of the input (ignored when float).
    rhs_grid: float32 [qmin, qmax] of the kernel (ignored when float).
    static: hashable (conv keyword items, lhs quantized, rhs quantized).

  Returns:
    `q`, unchanged. The VJP gives lhs/rhs the float conv's VJP at the
    dequantized operands, each masked to its clipping range.
  """
  del lhs, rhs, lhs_scale, rhs_scale, lhs_grid, rhs_grid, static
  return q


def _conv_ste_fwd(q, lhs, rhs, lhs_scale, rhs_scale, lhs_grid, rhs_grid,
                  static):
  del static
  return q, (lhs, rhs, lhs_scale, rhs_scale, lhs_grid, rhs_grid)


def _conv_ste_bwd(static, res, g):
  lhs, rhs, lhs_scale, rhs_scale, lhs_grid, rhs_grid = res
  kwargs, lq, rq = static
  xh, mx = _ste_operand(lhs, lhs_scale, lhs_grid if lq else None)
  wh, mw = _ste_operand(rhs, rhs_scale, rhs_grid if rq else None)
  _, vjp = jax.vjp(lambda a, b: lax.conv_general_dilated(a, b, **dict(kwargs)),
                   xh, wh)
  gx, gw = vjp(g)
  return (jnp.zeros_like(g), gx * mx, gw * mw, jnp.zeros_like(lhs_scale),
          jnp.zeros_like(rhs_scale), jnp.zeros_like(lhs_grid),
          jnp.zeros_like(rhs_grid))


conv_ste.defvjp(_conv_ste_fwd, _conv_ste_bwd)


def _hashable(v):
  if isinstance(v, (list, tuple)):
    return tuple(_hashable(x) for x in v)
  return v


class AqtConvSite(_Site):
  """`conv_general_dilated_cls` for nn.Conv (AQT conv + straight-through)."""

  @nn.compact
  def __call__(self, lhs, rhs, window_strides, padding, lhs_dilation=None,
               rhs_dilation=None, dimension_numbers=None,
               feature_group_count=1, batch_group_count=1, precision=None,
               preferred_element_type=None):
    layer = self.layer
    ls = self._scale('lhs', layer.lhs, lhs.shape)
    rs = self._scale('rhs', layer.rhs, rhs.shape)
    frozen = self._frozen_rhs()
    lg, rg = self._grids()
    cfg = aqt_config.conv_config(
        layer.lhs, layer.rhs, rank=lhs.ndim,
        rhs_scale=self._convert_rhs_scale(rs), grids=(lg, rg))
    conv = aqt_flax.AqtConvGeneralDilated(
        cfg, **self._aqt_kwargs(lhs, rhs, ls, rs, frozen))
    q = conv(lax.stop_gradient(lhs), lax.stop_gradient(rhs), window_strides,
             padding, lhs_dilation, rhs_dilation, dimension_numbers,
             feature_group_count, batch_group_count, precision,
             preferred_element_type)
    kwargs = (('window_strides', _hashable(window_strides)),
              ('padding', _hashable(padding)),
              ('lhs_dilation', _hashable(lhs_dilation)),
              ('rhs_dilation', _hashable(rhs_dilation)),
              ('dimension_numbers', dimension_numbers),
              ('feature_group_count', feature_group_count),
              ('batch_group_count', batch_group_count),
              ('precision', precision),
              ('preferred_element_type', preferred_element_type))
    one = jnp.ones((), lhs.dtype)
    return conv_ste(q, lhs, rhs,
                    one if ls is None else aqt_config.full_rank_scale(
                        ls, lhs.ndim),
                    one if rs is None else rs,
                    _grid(layer.lhs, lg), _grid(layer.rhs, rg),
                    (kwargs, layer.lhs is not None, layer.rhs is not None))


def _einsum_swaps(eqn: str, lhs, rhs) -> bool:
  """Whether jnp.einsum passes (rhs, lhs) to its dot_general (as AqtEinsum)."""
  einsum = functools.partial(aqt_dot_general.einsum, eqn)
  jaxpr = jax.make_jaxpr(einsum)(
      jax.ShapeDtypeStruct(lhs.shape, lhs.dtype),
      jax.ShapeDtypeStruct(rhs.shape, rhs.dtype))
  dot = [e for e in jaxpr.eqns if e.primitive.name == 'dot_general']
  assert len(dot) == 1, f'einsum {eqn!r} is not one dot_general'
  a, b = dot[0].invars
  x, y = jaxpr.jaxpr.invars
  assert {a, b} == {x, y}, f'einsum {eqn!r} reshapes its operands'
  return a is y


class AqtEinsumSite(_Site):
  """An activation x activation einsum (attention QK^T, PV)."""

  @nn.compact
  def __call__(self, eqn: str, lhs, rhs):
    layer = self.layer
    ls = self._scale('lhs', layer.lhs, lhs.shape)
    rs = self._scale('rhs', layer.rhs, rhs.shape)
    swap = _einsum_swaps(eqn, lhs, rhs)
    first, second = (layer.rhs, layer.lhs) if swap else (layer.lhs, layer.rhs)
    s1, s2 = (rs, ls) if swap else (ls, rs)
    lg, rg = self._grids()
    cfg = aqt_config.dot_general_config(first, second,
                                        integer=self.mode != 'fake',
                                        grids=(rg, lg) if swap else (lg, rg))

    def dg(a, b, dimension_numbers, precision=None,
           preferred_element_type=None, **kwargs):
      del precision, preferred_element_type, kwargs
      return aqt_flax.AqtDotGeneral(
          cfg, prng_name=None,
          lhs_quant_mode=QuantMode.TRAIN, lhs_apply_quant_mode=False,
          lhs_qtensor=None if s1 is None else _incomplete(s1, a.ndim,
                                                           a.dtype),
          rhs_quant_mode=QuantMode.TRAIN, rhs_apply_quant_mode=False,
          rhs_qtensor=None if s2 is None else _incomplete(s2, b.ndim,
                                                           b.dtype),
          name='aqt')(a, b, dimension_numbers, None, None)

    return aqt_dot_general.einsum(eqn, lhs, rhs, dg=dg)


class AqtOps(Ops):
  """Quantized contractions for every layer in `plan` (others stay float).

  Attributes:
    plan: Role path -> LayerQuant.
    mode: 'fake', 'int', 'convert' or 'serve'.
    scales: Role path -> {'lhs': array, 'rhs': array}: the initial values of
      the 'quant' variables (model.init) and the constants of 'convert'
      without traced grids (with them, CONVERT reads the variables).
    traced_grid: read every operand's [qmin, qmax] from the 'quant_grid'
      variables (`pipeline.grid_collection`) instead of the plan's
      constants: the same values, but the compiled program no longer
      depends on the bit widths, so the precisions of a model share it.
  """

  def __init__(self, plan: dict[str, LayerQuant], mode: str = 'fake',
               scales: dict[str, dict[str, Any]] | None = None,
               traced_grid: bool = False):
    if mode not in MODES:
      raise ValueError(f'mode={mode!r}; allowed: {MODES}')
    self.plan = plan
    self.mode = mode
    self.scales = scales or {}
    self.traced_grid = traced_grid

  def _site(self, cls, role: Role, **kw):
    layer = self.plan.get(role.path)
    if layer is None or not layer.quantized:
      return None
    return functools.partial(cls, layer=layer, mode=self.mode,
                             init_scales=self.scales.get(role.path),
                             traced_grid=self.traced_grid, **kw)

  def dot_general_cls(self, role: Role) -> Any:
    return self._site(AqtDotGeneralSite, role, name='q')

  def conv_general_dilated_cls(self, role: Role) -> Any:
    return self._site(AqtConvSite, role, name='q')

  def einsum(self, role: Role) -> Callable[..., Any]:
    site = self._site(AqtEinsumSite, role, name=role.path.split('/')[-1])
    if site is None:
      return jnp.einsum
    return lambda eqn, a, b: site()(eqn, a, b)
