"""AQT configurations for the reference scale rules (static, per-tensor, signed
or unsigned grids).

AQT's stock integer numerics (`IntSymmetric`) use a narrow signed grid
[-(2^(b-1) - 1), 2^(b-1) - 1] and derive scales on the fly (per row / per
output channel). MQBench's academic setting needs the full signed grid
[-2^(b-1), 2^(b-1) - 1], an unsigned grid [0, 2^b - 1] after ReLU, and static
per-tensor activation scales. We plug those in through AQT's own extension
points:

* `IntGrid`, an `AqtNumerics` (clip to [qmin, qmax], round half to even,
  cast to int8/uint8; backward: straight-through, masked to the grid, like
  `IntSymmetric.vjp_bwd`).
* Static scales: the calibrated scales are handed to `AqtDotGeneral` /
  `AqtConvGeneralDilated` as *incomplete* `QTensor`s (scale, no value), AQT's
  mechanism for externally computed quantization parameters; AQT then
  computes the integer values itself. `StaticScale` is an AQT `Calibration`
  returning a fixed scale: it serves CONVERT (where AQT calibrates the kernel
  itself before freezing it) and is a placeholder elsewhere (AQT always runs
  its calibration; the result is discarded when a scale is handed in).
* Real integer matmuls: `DotGeneralRaw.dot_general` is replaced by
  `integer_dot_general`, which requests int32 accumulation whenever both
  operands are integers (AQT's own switch only admits int4/int8, not the
  uint8 of 8-bit unsigned activations).
"""

import functools
from typing import Any

from aqt.jax.v2 import aqt_dot_general
from aqt.jax.v2 import calibration as aqt_calibration
from aqt.jax.v2 import config as aqt_config
from aqt.jax.v2 import utils as aqt_utils
from aqt.jax.v2.numerics import no_numerics
from aqt.jax.v2.numerics import numerics as aqt_numerics
import jax
from jax import lax
import jax.numpy as jnp

from robustmq_jax.quant import reference
from robustmq_jax.quant.plan import TensorQuant

DequantMode = aqt_dot_general.DequantMode


@aqt_utils.flax_slots_kw_only_dataclass
class IntGrid(aqt_numerics.AqtNumerics):
  """Integer grid [qmin, qmax] with round-half-to-even (reference rule).

  Attributes:
    qmin: smallest integer: a Python int, or a traced float scalar when the
      grid is a variable (`grid_numerics(..., grid=...)`).
    qmax: largest integer (same kind as qmin).
    dtype: container dtype of the quantized values (int8 / uint8), or None
      to keep the input float dtype (integer-valued floats).
  """
  qmin: Any
  qmax: Any
  dtype: Any = None

  def get_dtype(self):
    return self.dtype

  def get_quant_bound(self):
    # The width a bound maps onto (reference.half_range); only AQT's own
    # calibrators read it, and we hand scales in directly.
    if isinstance(self.qmin, int):
      return float(self.qmax) if self.qmin == 0 else (
          (self.qmax - self.qmin) / 2.0)
    qmin = jnp.asarray(self.qmin, jnp.float32)
    qmax = jnp.asarray(self.qmax, jnp.float32)
    return jnp.where(qmin == 0, qmax, (qmax - qmin) / 2.0)

  def vjp_fwd(self, x, context):
    del context
    y = jnp.clip(x, self.qmin, self.qmax)
    y = lax.round(y, lax.RoundingMethod.TO_NEAREST_EVEN)
    return y.astype(self.dtype or x.dtype), (x,)

  def vjp_bwd(self, res, grad):
    (x,) = res
    inside = (x >= self.qmin) & (x <= self.qmax)
    return (grad * inside.astype(grad.dtype), None)


@aqt_utils.flax_slots_kw_only_dataclass
class StaticScale(aqt_calibration.Calibration):
  """A fixed scale (broadcast to the calibration shape of the operand)."""

  scale: Any = 1.0

  def get_scale_and_bias_and_sparsity(self, x, shared_axes, numerics_,
                                      context=None):
    del numerics_, context
    shape = [1 if i in shared_axes else d for i, d in enumerate(x.shape)]
    scale = jnp.broadcast_to(jnp.asarray(self.scale, x.dtype), shape)
    return [scale], [], None


def grid_numerics(tq: TensorQuant | None, integer: bool, grid: Any = None):
  """AQT numerics of one operand (NoNumerics when it stays float).

  Args:
    tq: the operand's plan entry, or None (float).
    integer: integer containers (int8 / uint8) instead of float ones.
    grid: None for the plan's constant [qmin, qmax], or a traced float
      array [qmin, qmax] (the 'quant_grid' variables): the compiled program
      then does not depend on the bit width.
  """
  if tq is None:
    return no_numerics.NoNumerics()
  dtype = reference.container_dtype(tq.bits, tq.unsigned) if integer else None
  if grid is not None:
    return IntGrid(qmin=grid[0], qmax=grid[1], dtype=dtype)
  return IntGrid(qmin=tq.qmin, qmax=tq.qmax, dtype=dtype)


def integer_dot_general(lhs, rhs, dimension_numbers, precision=None,
                        preferred_element_type=None, **kwargs):
  """lax.dot_general with int32 accumulation when both operands are ints."""
  if (jnp.issubdtype(lhs.dtype, jnp.integer)
      and jnp.issubdtype(rhs.dtype, jnp.integer)):
    preferred_element_type = jnp.int32
  return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                         preferred_element_type=preferred_element_type,
                         **kwargs)


def _calibration(tq: TensorQuant | None, scale: Any = None):
  if tq is None:
    return None
  return functools.partial(StaticScale, scale=1.0 if scale is None else scale)


def dot_general_config(lhs: TensorQuant | None, rhs: TensorQuant | None, *,
                       integer: bool, rhs_scale: Any = None,
                       grids: tuple[Any, Any] = (None, None)
                       ) -> aqt_dot_general.DotGeneral:
  """The AQT config of one Dense / einsum contraction.

  Args:
    lhs: left operand grid (an activation) or None (float).
    rhs: right operand grid or None.
    integer: True for real integer matmuls (int8/uint8 operands, int32
      accumulation, output rescaled: `DequantMode.OUTPUT`); False for
      fake-quant (both operands dequantized before a float matmul:
      `DequantMode.THIS_INPUT`). A quantized operand multiplied by a float
      one is always dequantized first (int x float is not an integer matmul).
    rhs_scale: concrete scale for AQT's own calibration of the right operand
      (CONVERT); None when the scale is handed in as an incomplete QTensor.
    grids: traced [qmin, qmax] of (lhs, rhs), or None for the plan's
      constants (`grid_numerics`).

  Returns:
    An `aqt_dot_general.DotGeneral`; its backward pass is float, with the
    forward's quantized operands (`use_fwd_quant`) and gradients masked to
    the grid: the straight-through estimator.
  """
  cfg = aqt_config.default_unquantized_config()
  aqt_config.set_numerics(cfg.fwd, grid_numerics(lhs, integer, grids[0]),
                          grid_numerics(rhs, integer, grids[1]))
  q = cfg.fwd.dg_quantizer
  q.lhs.calibration = _calibration(lhs)
  q.rhs.calibration = _calibration(rhs, rhs_scale)
  if integer and lhs is not None and rhs is not None:
    cfg.fwd.dg_accumulator_dtype = None
    cfg.fwd.dot_general = integer_dot_general
  else:
    aqt_config.set_fwd_dequant_mode(
        cfg, lhs_dequant_mode=DequantMode.THIS_INPUT,
        rhs_dequant_mode=DequantMode.THIS_INPUT)
    cfg.fwd.dg_accumulator_dtype = None
  # Straight-through backward with the forward's quantized operands.
  cfg.dlhs.rhs.use_fwd_quant = rhs is not None
  cfg.drhs.rhs.use_fwd_quant = lhs is not None
  # Served kernels arrive as complete QTensors; AQT would poison their
  # gradient function. We never update them (the gradient into the frozen
  # kernel is dropped), but input gradients must flow.
  cfg.fwd.allow_dummy_gradient_into_qtensor = True
  return cfg


def conv_config(lhs: TensorQuant | None, rhs: TensorQuant | None, *,
                rank: int, rhs_scale: Any = None,
                grids: tuple[Any, Any] = (None, None)
                ) -> aqt_dot_general.DotGeneral:
  """The AQT config of one `AqtConvGeneralDilated` (NHWC / HWIO).

  AQT's conv casts the integer values back to the float input dtype and
  convolves in float (integer-valued floats), whatever the config; we keep
  int8/uint8 containers so the quantized values are visible in the graph.
  `grids` as in `dot_general_config`.
  """
  cfg = aqt_config.default_unquantized_config()
  raw = cfg.fwd
  aqt_config.set_numerics(raw, grid_numerics(lhs, True, grids[0]),
                          grid_numerics(rhs, True, grids[1]))
  raw.dg_accumulator_dtype = None
  q = raw.dg_quantizer
  # Flax layout assumed by aqt_conv_general: per-example lhs calibration
  # axes, per-output-channel rhs axes (placeholders; our scales are static).
  q.lhs.calib_shared_axes = list(range(1, rank))
  q.rhs.calib_shared_axes = list(range(0, rank - 1))
  q.lhs.calibration = _calibration(lhs)
  q.rhs.calibration = _calibration(rhs, rhs_scale)
  # The conv path has no custom VJP to initialise calibrators lazily.
  q.init_calibration()
  return cfg


def full_rank_scale(scale: jax.Array, ndim: int) -> jax.Array:
  """A per-tensor scale (one value) as an all-ones-shaped array of rank ndim."""
  # A jax array also when handed numpy: AQT's transpose helper reshapes
  # with a generator, which numpy's reshape rejects.
  scale = jnp.asarray(scale)
  return jnp.reshape(scale, (1,) * ndim) if scale.size == 1 else scale

