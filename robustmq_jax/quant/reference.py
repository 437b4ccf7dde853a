"""The reference quantizer in plain jnp: the test oracle and the scale rules.

One symmetric rule for every tensor (MQBench academic, `ObserverBase` of
ModelTC/mqbench-paper):

  signed b bits:    q in [-2^(b-1), 2^(b-1) - 1],  scale = bound / ((2^b-1)/2)
  unsigned b bits:  q in [0, 2^b - 1],             scale = bound / (2^b - 1)
  q = clip(round_half_to_even(x * (1 / scale)), qmin, qmax);  x^ = q * scale

`bound` is the clipping bound (max |x|, a percentile, an MSE-optimal value, a
PACT alpha). Scales are used, as in AQT, through their reciprocal
(``x * reciprocal(scale)``), so AQT's integers equal these exactly.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from robustmq_jax.quant import sites


def int_range(bits: int, unsigned: bool) -> tuple[int, int]:
  """(qmin, qmax) of the integer grid."""
  if unsigned:
    return 0, 2**bits - 1
  return -(2**(bits - 1)), 2**(bits - 1) - 1


def half_range(bits: int, unsigned: bool) -> float:
  """Grid width a bound maps onto: (2^b - 1) / 2 signed, 2^b - 1 unsigned."""
  return float(2**bits - 1) if unsigned else (2**bits - 1) / 2.0


def container_dtype(bits: int, unsigned: bool) -> Any:
  """Smallest integer dtype holding the grid (int8 / uint8 for <= 8 bits)."""
  del bits
  return jnp.uint8 if unsigned else jnp.int8


def scale_from_bound(bound, bits: int, unsigned: bool):
  """scale = bound / half_range; a zero bound gives scale 1 (all zeros)."""
  bound = jnp.asarray(bound, jnp.float32)
  bound = jnp.where(bound > 0, bound, jnp.ones_like(bound))
  return bound / jnp.float32(half_range(bits, unsigned))


def inverse_scale(scale: jax.Array) -> jax.Array:
  """1 / scale as the quantizers use it (a zero scale gives 1, not inf)."""
  inv = lax.reciprocal(scale)
  return jnp.where(jnp.isinf(inv), jnp.ones_like(inv), inv)


def quantize(x: jax.Array, scale: jax.Array, bits: int,
             unsigned: bool = False) -> jax.Array:
  """Integer values (int32) of `x` on the grid; `scale` broadcasts to x."""
  qmin, qmax = int_range(bits, unsigned)
  return on_grid(x, scale, qmin, qmax).astype(jnp.int32)


def on_grid(x: jax.Array, scale: jax.Array, qmin: Any, qmax: Any
            ) -> jax.Array:
  """The integers of `x` on [qmin, qmax], as integer-valued floats.

  `qmin` / `qmax` may be traced (a grid held in variables, so that one
  compiled program serves every bit width).
  """
  v = x * inverse_scale(jnp.asarray(scale, x.dtype))
  v = jnp.clip(v, jnp.asarray(qmin, x.dtype), jnp.asarray(qmax, x.dtype))
  return lax.round(v, lax.RoundingMethod.TO_NEAREST_EVEN)


def dequantize(q: jax.Array, scale: jax.Array,
               dtype: Any = jnp.float32) -> jax.Array:
  """q * scale in `dtype`."""
  return q.astype(dtype) * jnp.asarray(scale, dtype)


def fake_quant(x: jax.Array, scale: jax.Array, bits: int,
               unsigned: bool = False) -> jax.Array:
  """Quantize then dequantize (no gradient: round has derivative 0)."""
  return dequantize(quantize(x, scale, bits, unsigned), scale, x.dtype)


def inside_grid(x: jax.Array, scale: jax.Array, bits: int,
                unsigned: bool = False) -> jax.Array:
  """1.0 where ``x / scale`` lies inside [qmin, qmax] (not clipped), else 0."""
  return inside_range(x, scale, *int_range(bits, unsigned))


def inside_range(x: jax.Array, scale: jax.Array, qmin: Any, qmax: Any
                 ) -> jax.Array:
  """`inside_grid` with the grid given as (possibly traced) qmin / qmax."""
  v = x * inverse_scale(jnp.asarray(scale, x.dtype))
  return ((v >= jnp.asarray(qmin, x.dtype))
          & (v <= jnp.asarray(qmax, x.dtype))).astype(x.dtype)


def fake_quant_ste(x: jax.Array, scale: jax.Array, bits: int,
                   unsigned: bool = False) -> jax.Array:
  """Fake quantization with the straight-through estimator.

  Forward equals `fake_quant`; the gradient with respect to `x` is 1 where
  ``x / scale`` lies inside the grid [qmin, qmax] and 0 outside (clipped
  values), as in AQT's integer numerics. `scale` gets no gradient.
  """
  scale = lax.stop_gradient(jnp.asarray(scale, x.dtype))
  inside = inside_grid(lax.stop_gradient(x), scale, bits, unsigned)
  y = fake_quant(lax.stop_gradient(x), scale, bits, unsigned)
  return y + inside * (x - lax.stop_gradient(x))


def quantize_np(x: np.ndarray, scale: np.ndarray, bits: int,
                unsigned: bool = False) -> np.ndarray:
  """`quantize` on the host in numpy float32 (bit-identical; for storage)."""
  qmin, qmax = int_range(bits, unsigned)
  x = np.asarray(x, np.float32)
  with np.errstate(divide='ignore'):
    inv = np.reciprocal(np.asarray(scale, np.float32))
  inv = np.where(np.isinf(inv), np.float32(1), inv).astype(np.float32)
  v = np.clip(x * inv, qmin, qmax)
  return np.rint(v).astype(np.int32)


def dequantize_np(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
  """`dequantize` on the host (float32)."""
  return q.astype(np.float32) * np.asarray(scale, np.float32)


def channel_axes(ndim: int, contracting: tuple[int, ...],
                 per_channel: bool) -> tuple[int, ...]:
  """Axes a weight scale is shared over (reduced, kept with size 1).

  Per-tensor: all axes. Per-channel: the contracting axes, so every output
  feature gets its own scale.
  """
  return tuple(range(ndim)) if not per_channel else tuple(contracting)


def absmax(x: np.ndarray | jax.Array, axes: tuple[int, ...]) -> jax.Array:
  """max |x| over `axes`, keepdims (the min-max bound of a symmetric grid)."""
  return jnp.max(jnp.abs(x), axis=axes, keepdims=True)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def mse_bound(x: jax.Array, amax: jax.Array, bits: int, unsigned: bool,
              axes: tuple[int, ...], grid: int) -> jax.Array:
  """The bound in {amax * k / grid, k = 1..grid} with least squared error.

  Args:
    x: the tensor.
    amax: max |x| over `axes` (keepdims).
    bits: grid bits.
    unsigned: grid sign.
    axes: axes sharing one bound.
    grid: number of candidates.

  Returns:
    The best bound per group (same shape as `amax`).
  """
  fracs = jnp.arange(1, grid + 1, dtype=jnp.float32) / grid

  def err(frac):
    s = scale_from_bound(amax * frac, bits, unsigned)
    return jnp.sum((fake_quant(x, s, bits, unsigned) - x)**2, axis=axes,
                   keepdims=True)

  errs = lax.map(err, fracs)  # [grid, *amax.shape]
  best = jnp.argmin(errs, axis=0)
  return amax * fracs[best]


class _RefSite(nn.Module):
  """Straight-through fake quantization of both operands, float contraction.

  Reads the same 'quant' variables (lhs_scale, rhs_scale) as the AQT sites,
  so one variable tree serves both.
  """
  layer: Any  # plan.LayerQuant

  def _operand(self, x, tq, name):
    if tq is None:
      return x
    shape = () if tq.shared_axes is None else tq.scale_shape(x.shape)
    s = self.variable('quant', name, lambda: jnp.ones(shape, jnp.float32))
    return fake_quant_ste(x, s.value, tq.bits, tq.unsigned)

  def operands(self, lhs, rhs):
    return (self._operand(lhs, self.layer.lhs, 'lhs_scale'),
            self._operand(rhs, self.layer.rhs, 'rhs_scale'))


_RefDot, _RefConv, _RefEinsum = sites.contraction_modules(_RefSite, 'Ref')


class ReferenceOps(sites.SiteOps):
  """The reference quantizer behind the model seam (test oracle).

  Same plan and variables as `aqt_backend.AqtOps`; every operand goes
  through `fake_quant_ste` and the contraction is the float one, so its
  gradient is the textbook straight-through gradient.
  """
  modules = (_RefDot, _RefConv, _RefEinsum)

  def __init__(self, plan):
    self.plan = plan
