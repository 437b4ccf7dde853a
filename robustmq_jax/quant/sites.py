"""Operand-transforming contraction sites, shared by the plain-JAX quantizers.

The reference quantizer (`reference.ReferenceOps`) and QAT (`qat.QatOps`)
both quantize the two operands of a contraction and then run the float
contraction. A quantizer writes one Flax module with an ``operands(lhs,
rhs)`` method; `contraction_modules` derives its Dense, Conv and einsum
modules from it, and `SiteOps` plugs them into the model seam
(`models.ops.Ops`) for every quantized layer of a plan. (The AQT backend
replaces the contraction itself, so it has its own sites.)
"""

import functools
from typing import Any, Callable

import flax.linen as nn
from jax import lax
import jax.numpy as jnp

from robustmq_jax.models.ops import Ops
from robustmq_jax.models.ops import Role


def contraction_modules(base: type[nn.Module], prefix: str):
  """Dense / Conv / einsum modules whose operands pass `base.operands`.

  Args:
    base: a Flax module class with ``operands(lhs, rhs) -> (lhs, rhs)``
      (called inside the compact method, so it may create variables).
    prefix: class-name prefix (for readable module reprs).

  Returns:
    (dot_general module, conv_general_dilated module, einsum module).
  """

  class DotGeneral(base):

    @nn.compact
    def __call__(self, lhs, rhs, dimension_numbers, precision=None,
                 preferred_element_type=None):
      lhs, rhs = self.operands(lhs, rhs)
      return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                             preferred_element_type=preferred_element_type)

  class Conv(base):

    @nn.compact
    def __call__(self, lhs, rhs, *args, **kwargs):
      lhs, rhs = self.operands(lhs, rhs)
      return lax.conv_general_dilated(lhs, rhs, *args, **kwargs)

  class Einsum(base):

    @nn.compact
    def __call__(self, eqn, lhs, rhs):
      lhs, rhs = self.operands(lhs, rhs)
      return jnp.einsum(eqn, lhs, rhs)

  out = (DotGeneral, Conv, Einsum)
  for cls in out:
    cls.__name__ = cls.__qualname__ = prefix + cls.__name__
  return out


class SiteOps(Ops):
  """`Ops` that installs one quantizer's modules on the plan's layers.

  Subclasses set `modules` (from `contraction_modules`) and `plan`, and
  may override `site_kwargs` to pass more fields to the modules.
  """
  modules: tuple[Any, Any, Any]
  plan: Any  # plan.Plan

  def site_kwargs(self, role: Role) -> dict[str, Any]:
    del role
    return {}

  def _site(self, cls, role: Role, name: str):
    layer = self.plan.get(role.path)
    if layer is None or not layer.quantized:
      return None
    return functools.partial(cls, layer=layer, name=name,
                             **self.site_kwargs(role))

  def dot_general_cls(self, role: Role) -> Any:
    return self._site(self.modules[0], role, 'q')

  def conv_general_dilated_cls(self, role: Role) -> Any:
    return self._site(self.modules[1], role, 'q')

  def einsum(self, role: Role) -> Callable[..., Any]:
    site = self._site(self.modules[2], role, role.path.split('/')[-1])
    if site is None:
      return jnp.einsum
    return lambda eqn, a, b: site()(eqn, a, b)
