"""Grouped convolutions as per-tap matrix products, for XLA:CPU.

XLA:CPU has no fast kernel for a convolution with ``feature_group_count > 1``
(RegNet's grouped and MobileNet's depthwise convolutions) or
``batch_group_count > 1`` (their kernel gradients): it runs them as a naive
emitted loop, 5-20x slower than the dense convolution of the same shape
(benchmarks/RESULTS.md, "Grouped convolutions on the CPU"). `grouped_conv`
computes the same convolution as a sum of strided slices times small batched
matrix products (one `dot_general` per kernel tap, batched over the groups),
which XLA:CPU runs with its fast kernels, and whose derivatives are slices,
pads and matrix products again. The arithmetic is the convolution's own
products; only the order of the summation changes (results equal within
float rounding).

Operands are in XLA:CPU's canonical layout (`conv_layout`): input
``[batch, spatial..., feature]``, kernel ``[spatial..., in, out]``, output
``[batch, spatial..., out]``.
"""

import itertools
import math
from typing import Any, Sequence

import jax
from jax import lax
import jax.numpy as jnp

# Loops longer than this (kernel taps, or output positions for a kernel
# gradient) stay one convolution: the unrolled sum would compile too long.
MAX_TERMS = 64


def _num_terms(lhs_shape: Sequence[int], rhs_shape: Sequence[int],
               params: dict[str, Any]) -> int:
  if params['batch_group_count'] > 1:  # one product per output position
    return math.prod(_out_spatial(lhs_shape, rhs_shape, params))
  return math.prod(rhs_shape[:-2])  # one product per kernel tap


def supported(lhs: jax.Array, rhs: jax.Array, params: dict[str, Any]) -> bool:
  """Whether `grouped_conv` should compute this (canonical) convolution.

  Grouped, float32 or float64 operands of one dtype accumulated in that
  dtype (lower precisions would be summed tap by tap in their own type),
  static shapes, a non-empty output, no output sharding, and at most
  `MAX_TERMS` terms; anything else stays the op.
  """
  if not is_grouped(params):
    return False
  if lhs.dtype not in (jnp.float32, jnp.float64) or rhs.dtype != lhs.dtype:
    return False
  if params.get('preferred_element_type') not in (None, lhs.dtype):
    return False
  if params.get('out_sharding') is not None:
    return False
  if not all(isinstance(d, int) for d in lhs.shape + rhs.shape):
    return False
  return (all(_out_spatial(lhs.shape, rhs.shape, params))
          and _num_terms(lhs.shape, rhs.shape, params) <= MAX_TERMS)


def _dilated_padded(lhs: jax.Array, params: dict[str, Any]) -> jax.Array:
  """The input with interior (lhs) dilation and edge padding applied."""
  n = lhs.ndim - 2
  dil = params['lhs_dilation'] or (1,) * n
  pads = [(0, 0, 0)] + [(lo, hi, d - 1) for (lo, hi), d in
                        zip(params['padding'], dil)] + [(0, 0, 0)]
  return lax.pad(lhs, jnp.zeros((), lhs.dtype), pads)


def _out_spatial(lhs_shape: Sequence[int], rhs_shape: Sequence[int],
                 params: dict[str, Any]) -> tuple[int, ...]:
  n = len(lhs_shape) - 2
  ld = params['lhs_dilation'] or (1,) * n
  rd = params['rhs_dilation'] or (1,) * n
  out = []
  for i in range(n):
    size = (lhs_shape[1 + i] - 1) * ld[i] + 1 + sum(params['padding'][i])
    span = (rhs_shape[i] - 1) * rd[i] + 1
    out.append(max(0, (size - span) // params['window_strides'][i] + 1))
  return tuple(out)


def _window(xp: jax.Array, start: Sequence[int], count: Sequence[int],
            step: Sequence[int]) -> jax.Array:
  """xp[:, start + step * arange(count), ..., :] along the spatial axes."""
  lo = (0,) + tuple(start) + (0,)
  hi = ((xp.shape[0],) + tuple(s + (c - 1) * t + 1 for s, c, t in
                               zip(start, count, step)) + (xp.shape[-1],))
  return lax.slice(xp, lo, hi, (1,) + tuple(step) + (1,))


def grouped_conv(lhs: jax.Array, rhs: jax.Array, **params) -> jax.Array:
  """`lax.conv_general_dilated` with groups, canonical layout, no conv op.

  Args:
    lhs: input ``[batch, spatial..., feature]``.
    rhs: kernel ``[spatial..., in, out]``.
    **params: the `conv_general_dilated` primitive's parameters
      (window_strides, padding as (low, high) pairs, lhs_dilation,
      rhs_dilation, feature_group_count, batch_group_count, precision,
      preferred_element_type; dimension_numbers must be canonical).

  Returns:
    The convolution ``[batch, spatial..., out]``, equal to the primitive's
    within float rounding (call only where `supported` holds).
  """
  n = lhs.ndim - 2
  strides = tuple(params['window_strides'])
  rd = tuple(params['rhs_dilation'] or (1,) * n)
  out_sp = _out_spatial(lhs.shape, rhs.shape, params)
  taps = rhs.shape[:n]
  cin, cout = rhs.shape[-2:]
  xp = _dilated_padded(lhs, params)
  dot = dict(precision=params['precision'],
             preferred_element_type=params['preferred_element_type'])
  fg, bg = params['feature_group_count'], params['batch_group_count']
  if bg > 1:
    # A kernel gradient: each output position is one contraction over the
    # kernel's (large) spatial extent and `in`, batched over the groups of
    # the input's batch axis and the kernel's `out` axis.
    b = lhs.shape[0] // bg
    w = rhs.reshape(taps + (cin, bg, cout // bg))
    outs = []
    for pos in itertools.product(*map(range, out_sp)):
      xs = _window(xp, [p * s for p, s in zip(pos, strides)], taps, rd)
      xs = xs.reshape((bg, b) + xs.shape[1:])  # [G, B', K..., F]
      y = lax.dot_general(  # -> [G, B', O']
          xs, w, (((tuple(range(2, n + 3))), tuple(range(n + 1))),
                  ((0,), (n + 1,))), **dot)
      outs.append(jnp.swapaxes(y, 0, 1).reshape(b, cout))
    out = jnp.stack(outs, axis=1)
    return out.reshape((b,) + out_sp + (cout,))
  # Grouped or depthwise: one batched product per kernel tap.
  g = fg
  batch = lhs.shape[0]
  w = rhs.reshape(taps + (cin, g, cout // g))
  out = None
  for tap in itertools.product(*map(range, taps)):
    xs = _window(xp, [t * d for t, d in zip(tap, rd)], out_sp, strides)
    xs = xs.reshape(xs.shape[:-1] + (g, cin))  # [B, S'..., G, I]
    wk = w[tap]  # [I, G, O']
    if cin == 1:  # depthwise: a broadcast product, no contraction
      y = xs * wk[0]
    else:
      y = lax.dot_general(  # -> [G, B, S'..., O']
          xs, wk, (((n + 2,), (0,)), ((n + 1,), (1,))), **dot)
      y = jnp.moveaxis(y, 0, -2)
    y = y.reshape((batch,) + out_sp + (cout,))
    out = y if out is None else out + y
  return out


def is_grouped(params: dict[str, Any]) -> bool:
  """Whether a `conv_general_dilated` equation's params have groups."""
  return max(params['feature_group_count'], params['batch_group_count']) > 1
