"""Convolutions in the layout XLA:CPU's fast kernels take, inside loops too.

XLA:CPU runs a convolution with its Eigen (or YNNPACK) kernel only when the
operands are in the canonical layout: batch first and features last for the
input and output, kernel ``[spatial..., in, out]``. Its ConvCanonicalization
pass puts other convolutions into that layout by inserting transposes, but
only in the entry computation: a convolution inside a `lax.fori_loop` /
`while_loop` body keeps its layout and falls back to a naive emitted loop,
10x slower at the sizes of our models (jax-ml/jax#12868). JAX's gradient of
a convolution with respect to its input is such a convolution (the kernel
spec swaps `in` and `out`), so every attack step of a conv net paid it.

`canonical_convs(fn)` evaluates `fn`'s jaxpr with every convolution put into
the canonical layout by explicit transposes, the same rewrite XLA does at top
level, so the step loop gets the kernels of a single jitted value-and-grad.
The arithmetic is the same convolution; only the kernel that computes it
changes (results equal to float rounding of the summation order, bitwise
equal to what the same call computes outside a loop). Grouped and depthwise
convolutions, which XLA:CPU has no fast kernel for in any layout, are
computed as per-tap matrix products (`grouped_conv`), equal within float
rounding.
"""

from typing import Any, Callable, Sequence

import jax
from jax.extend import core as jcore

from robustmq_jax.xla_cpu import grouped_conv

CONV = 'conv_general_dilated'
# Call-like equations inlined so their convolutions are rewritten too; their
# bodies run once on exactly the equation's inputs. Custom-derivative and
# remat bodies are left whole (inlining them would change how a caller that
# differentiates the result is differentiated).
_INLINE = ('jit', 'pjit', 'closed_call', 'core_call')


def canonical_dimension_numbers(rank: int) -> jax.lax.ConvDimensionNumbers:
  """XLA:CPU's canonical layout: NHWC input/output, HWIO kernel."""
  n = rank - 2
  spatial = tuple(range(1, n + 1))
  return jax.lax.ConvDimensionNumbers(
      lhs_spec=(0, n + 1) + spatial, rhs_spec=(n + 1, n) + tuple(range(n)),
      out_spec=(0, n + 1) + spatial)


def is_canonical(dimension_numbers: jax.lax.ConvDimensionNumbers) -> bool:
  return tuple(dimension_numbers) == tuple(
      canonical_dimension_numbers(len(dimension_numbers.lhs_spec)))


def _transpose(x, perm: Sequence[int]):
  perm = tuple(perm)
  return x if perm == tuple(range(len(perm))) else jax.lax.transpose(x, perm)


def _bind(primitive, lhs, rhs, **params):
  """The canonical convolution: per-tap products if grouped, else the op."""
  if grouped_conv.supported(lhs, rhs, params):
    return grouped_conv.grouped_conv(lhs, rhs, **params)
  return primitive.bind(lhs, rhs, **params)


def canonical_conv(primitive, lhs, rhs, **params):
  """`primitive.bind(lhs, rhs, **params)` computed in the canonical layout.

  A grouped convolution (feature or batch groups, as in RegNet, MobileNet
  and their gradients) is computed by `grouped_conv` instead of the op.
  """
  dn = params['dimension_numbers']
  if is_canonical(dn):
    return _bind(primitive, lhs, rhs, **params)
  lhs_spec, rhs_spec, out_spec = dn
  # Spatial axes keep their order, so the window parameters (strides,
  # padding, dilations, listed per spatial axis of the spec) carry over.
  lhs = _transpose(lhs, (lhs_spec[0],) + lhs_spec[2:] + (lhs_spec[1],))
  rhs = _transpose(rhs, rhs_spec[2:] + (rhs_spec[1], rhs_spec[0]))
  params = dict(params,
                dimension_numbers=canonical_dimension_numbers(len(lhs_spec)))
  out = _bind(primitive, lhs, rhs, **params)
  # Canonical output axes are (batch, spatial..., feature); put each back at
  # the axis the original spec gives it.
  n = len(out_spec) - 2
  perm = [0] * len(out_spec)
  perm[out_spec[0]] = 0
  perm[out_spec[1]] = n + 1
  for i, axis in enumerate(out_spec[2:]):
    perm[axis] = i + 1
  return _transpose(out, perm)


def _needs_rewrite(jaxpr) -> bool:
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == CONV and (
        not is_canonical(eqn.params['dimension_numbers'])
        or grouped_conv.is_grouped(eqn.params)):
      return True
    if eqn.primitive.name in _INLINE and any(
        _needs_rewrite(sub) for sub in jcore.jaxprs_in_params(eqn.params)):
      return True
  return False


def _evaluate(jaxpr, consts, args) -> list[Any]:
  env = {}

  def read(v):
    return v.val if isinstance(v, jcore.Literal) else env[v]

  for var, val in zip(jaxpr.constvars, consts):
    env[var] = val
  for var, val in zip(jaxpr.invars, args):
    env[var] = val
  for eqn in jaxpr.eqns:
    invals = [read(v) for v in eqn.invars]
    body = eqn.params.get('jaxpr') if eqn.primitive.name in _INLINE else None
    if eqn.primitive.name in _INLINE and body is None:
      body = eqn.params.get('call_jaxpr')
    if isinstance(body, jcore.ClosedJaxpr) and _needs_rewrite(body.jaxpr):
      outvals = _evaluate(body.jaxpr, body.consts, invals)
    elif eqn.primitive.name == CONV:
      outvals = [canonical_conv(eqn.primitive, *invals, **eqn.params)]
    else:
      outvals = eqn.primitive.bind(
          *invals, **eqn.primitive.get_bind_params(eqn.params))
      if not eqn.primitive.multiple_results:
        outvals = [outvals]
    for var, val in zip(eqn.outvars, outvals):
      env[var] = val
  return [read(v) for v in jaxpr.outvars]


def canonical_convs(fn: Callable[..., Any]) -> Callable[..., Any]:
  """`fn` with its convolutions in XLA:CPU's canonical layout.

  Traces `fn` once per call (inside a caller's `jax.jit`, once per compile)
  and re-emits its jaxpr, inlining jit calls, with each non-canonical
  convolution wrapped in transposes to the canonical layout and each
  grouped convolution that `grouped_conv.supported` accepts computed as
  per-tap products. A function without such convolutions is re-emitted
  unchanged. Convolutions inside a control-flow, custom-derivative or remat
  body of `fn` itself are left as they are.

  Wrap a function that is already differentiated (a value-and-grad) or never
  differentiated: custom-derivative calls are re-bound from the jaxpr, and
  an outer `jax.grad` through re-bound AQT calls can fail.

  Args:
    fn: a function of arrays (pytrees allowed) returning arrays.

  Returns:
    A function computing the same values.
  """

  def wrapped(*args):
    closed, shapes = jax.make_jaxpr(fn, return_shape=True)(*args)
    if not _needs_rewrite(closed.jaxpr):
      out = jcore.jaxpr_as_fun(closed)(*jax.tree.leaves(args))
    else:
      out = _evaluate(closed.jaxpr, closed.consts, jax.tree.leaves(args))
    return jax.tree.unflatten(jax.tree.structure(shapes), out)

  return wrapped


def wanted() -> bool:
  """Whether to rewrite: on XLA:CPU (GPU/TPU compilers take any layout)."""
  return jax.default_backend() == 'cpu'
