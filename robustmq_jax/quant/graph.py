"""What a quantized graph really computes: the operands of its contractions.

`contractions(fn, *args)` lists every dot_general / conv_general_dilated of
`jax.make_jaxpr(fn)(*args)`, walking into jit, custom-JVP and custom-VJP
bodies (AQT hides its quantized matmul inside a custom VJP), with operand
dtypes. `contraction_operands(fn, *args)` also returns their values: the
jaxpr is re-interpreted inside one `jax.jit`, so it compiles once.
"""

import dataclasses
from typing import Any, Callable

import jax
from jax.extend import core as jcore
import numpy as np

CONTRACTIONS = ('dot_general', 'conv_general_dilated')


@dataclasses.dataclass
class Contraction:
  """One contraction of a traced function.

  Attributes:
    primitive: 'dot_general' or 'conv_general_dilated'.
    lhs_dtype: dtype of the left operand.
    rhs_dtype: dtype of the right operand.
    out_dtype: dtype of the result.
    lhs: left operand value (numpy) when evaluated, else None.
    rhs: right operand value when evaluated, else None.
  """
  primitive: str
  lhs_dtype: Any
  rhs_dtype: Any
  out_dtype: Any
  lhs: np.ndarray | None = None
  rhs: np.ndarray | None = None


# Equations whose body runs once on exactly the equation's inputs.
_CALLS = ('jit', 'pjit', 'closed_call', 'core_call', 'custom_jvp_call',
          'custom_vjp_call', 'custom_vjp_call_jaxpr', 'remat', 'checkpoint')


def _call_body(eqn) -> Any:
  """The ClosedJaxpr a call-like equation runs on its inputs, or None."""
  if eqn.primitive.name not in _CALLS:
    return None
  for key in ('jaxpr', 'call_jaxpr'):
    sub = eqn.params.get(key)
    if isinstance(sub, jcore.ClosedJaxpr) and len(sub.jaxpr.invars) == len(
        eqn.invars):
      return sub
    if isinstance(sub, jcore.Jaxpr) and len(sub.invars) == len(eqn.invars):
      return jcore.ClosedJaxpr(sub, ())
  return None


def _walk(jaxpr, found: list[Contraction]) -> None:
  for eqn in jaxpr.eqns:
    if eqn.primitive.name in CONTRACTIONS:
      a, b = eqn.invars[:2]
      found.append(Contraction(eqn.primitive.name, a.aval.dtype, b.aval.dtype,
                               eqn.outvars[0].aval.dtype))
    for sub in jcore.jaxprs_in_params(eqn.params):
      _walk(sub, found)


def contractions(fn: Callable[..., Any], *args) -> list[Contraction]:
  """Contractions of `fn(*args)` in program order (no values)."""
  found: list[Contraction] = []
  _walk(jax.make_jaxpr(fn)(*args).jaxpr, found)
  return found


def _interpret(jaxpr, consts, args, sink: list):
  env = {}

  def read(v):
    return v.val if isinstance(v, jcore.Literal) else env[v]

  for var, val in zip(jaxpr.constvars, consts):
    env[var] = val
  for var, val in zip(jaxpr.invars, args):
    env[var] = val
  for eqn in jaxpr.eqns:
    invals = [read(v) for v in eqn.invars]
    body = _call_body(eqn)
    if body is not None:  # Inline: forward values only.
      outvals = _interpret(body.jaxpr, body.consts, invals, sink)
    else:
      outvals = eqn.primitive.bind(*invals, **eqn.params)
      if not eqn.primitive.multiple_results:
        outvals = [outvals]
      if eqn.primitive.name in CONTRACTIONS:
        sink.append((eqn.primitive.name, invals[0], invals[1], outvals[0]))
    for var, val in zip(eqn.outvars, outvals):
      env[var] = val
  return [read(v) for v in jaxpr.outvars]


def contraction_operands(fn: Callable[..., Any], *args) -> list[Contraction]:
  """Contractions of `fn(*args)` with their operand values."""
  closed = jax.make_jaxpr(fn)(*args)
  flat = jax.tree.leaves(args)

  def run(*leaves):
    sink: list = []
    _interpret(closed.jaxpr, closed.consts, leaves, sink)
    return [(a, b) for _, a, b, _ in sink], [(n, o.dtype) for n, _, _, o in
                                             sink]

  sink_meta = []  # Names and result dtypes, filled while tracing.

  def values(*leaves):
    pairs, meta = run(*leaves)
    sink_meta[:] = meta
    return pairs

  pairs = jax.device_get(jax.jit(values)(*flat))
  return [Contraction(name, np.asarray(a).dtype, np.asarray(b).dtype, out,
                      np.asarray(a), np.asarray(b))
          for (name, out), (a, b) in zip(sink_meta, pairs)]
