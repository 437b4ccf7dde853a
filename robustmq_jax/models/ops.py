"""The contraction seam between models and quantization.

Models call `ops.dot_general_cls(role)`, `ops.conv_general_dilated_cls(role)`
and `ops.einsum(role)` for every Dense, Conv and attention einsum. The float
default returns the plain Flax/JAX implementation. `robustmq_jax.quant`
provides a subclass that returns quantized implementations; models never
import AQT and never branch on precision.

A ``role`` is a stable, human-readable layer name (the Flax module path of the
layer, e.g. ``'conv1'``, ``'layer1_0/conv2'``, ``'head'``, or
``'Transformer/encoderblock_0/MultiHeadDotProductAttention_1/qk'``) plus
the layer's position flags, so a quantizer can keep the first and last layers
at 8 bits.
"""

import dataclasses
from typing import Any, Callable

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Role:
  """Identifies one contraction in a model.

  Attributes:
    path: module path of the layer inside the model, '/'-separated.
    kind: 'dense', 'conv' or 'einsum'.
    first: True for the model's first contraction (the stem / patch embedding).
    last: True for the classifier head.
  """
  path: str
  kind: str
  first: bool = False
  last: bool = False


class Ops:
  """Float contractions. Subclass and override to change the arithmetic."""

  def dot_general_cls(self, role: Role) -> Any:
    """Returns a `dot_general_cls` for `nn.Dense`, or None for the default."""
    del role
    return None

  def conv_general_dilated_cls(self, role: Role) -> Any:
    """Returns a `conv_general_dilated_cls` for `nn.Conv`, or None."""
    del role
    return None

  def einsum(self, role: Role) -> Callable[..., Any]:
    """Returns a callable ``f(eqn, lhs, rhs)`` used inside a compact module.

    The quantized version may create Flax submodules, so it must be called
    from inside a `nn.compact` method of the model.
    """
    del role
    return jnp.einsum


FLOAT_OPS = Ops()
