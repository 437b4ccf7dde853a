"""The per-layer quantization plan: bits, sign and scale shape of each operand.

Every contraction a model routes through `robustmq_jax.models.ops` (a `Role`)
gets a `LayerQuant`: how its left operand (always an activation) and its right
operand (the kernel of a Dense/Conv, or the second activation of an attention
einsum) are quantized. The plan's structure is static (it fixes the compiled
graph); the scales are variables (collection ``'quant'``), and so are the
integer grids of the evaluated model (``'quant_grid'``), so that its
precisions share one program.
"""

import dataclasses
from typing import Any

import numpy as np

from robustmq_jax.models.ops import Role
from robustmq_jax.quant import reference
from robustmq_jax.quant.spec import QuantSpec

QUANT_COLLECTION = 'quant'
LHS_SCALE = 'lhs_scale'
RHS_SCALE = 'rhs_scale'
# The integer grids as variables (float32 [qmin, qmax] per operand, beside
# the scales' paths): the evaluated model reads them instead of baking the
# bit width into its program, so that every precision of a model shares one
# compiled program (`AqtOps(..., traced_grid=True)`).
GRID_COLLECTION = 'quant_grid'
LHS_GRID = 'lhs_grid'
RHS_GRID = 'rhs_grid'


@dataclasses.dataclass(frozen=True)
class TensorQuant:
  """How one operand is quantized.

  Attributes:
    bits: grid bits (2..8).
    unsigned: grid [0, 2^b - 1] instead of [-2^(b-1), 2^(b-1) - 1].
    shared_axes: axes sharing one scale (weights: all axes for per-tensor,
      the contracting axes for per-channel); None for an activation (always
      one per-tensor scale, shape ()).
  """
  bits: int
  unsigned: bool = False
  shared_axes: tuple[int, ...] | None = None

  @property
  def qmin(self) -> int:
    return reference.int_range(self.bits, self.unsigned)[0]

  @property
  def qmax(self) -> int:
    return reference.int_range(self.bits, self.unsigned)[1]

  @property
  def grid(self) -> np.ndarray:
    """float32 [qmin, qmax]: the operand's 'quant_grid' variable."""
    return np.asarray([self.qmin, self.qmax], np.float32)

  def scale_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of the scale for an operand of `shape` (keepdims)."""
    if self.shared_axes is None:
      return ()
    return tuple(1 if i in self.shared_axes else d for i, d in
                 enumerate(shape))


@dataclasses.dataclass(frozen=True)
class LayerQuant:
  """Quantization of one contraction.

  Attributes:
    path: the Role path.
    kind: 'dense', 'conv' or 'einsum'.
    lhs: the input activation (None: float).
    rhs: the kernel (dense/conv) or second activation (einsum); None: float.
    rhs_shape: kernel shape (dense/conv), for the stored integers.
  """
  path: str
  kind: str
  lhs: TensorQuant | None
  rhs: TensorQuant | None
  rhs_shape: tuple[int, ...] | None = None

  @property
  def rhs_is_weight(self) -> bool:
    return self.kind != 'einsum'

  @property
  def quantized(self) -> bool:
    return self.lhs is not None or self.rhs is not None

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, d: dict[str, Any]) -> 'LayerQuant':
    def tq(t):
      if t is None:
        return None
      axes = t.get('shared_axes')
      return TensorQuant(int(t['bits']), bool(t['unsigned']),
                         None if axes is None else tuple(axes))
    shape = d.get('rhs_shape')
    return cls(d['path'], d['kind'], tq(d['lhs']), tq(d['rhs']),
               None if shape is None else tuple(shape))


Plan = dict[str, LayerQuant]


def scale_module_path(layer: LayerQuant) -> str:
  """Flax path of the module holding a layer's 'quant' variables.

  Dense/Conv sites are the layer's `q` child; einsum sites are named after
  the last component of the Role path inside the calling module.
  """
  return layer.path if layer.kind == 'einsum' else layer.path + '/q'


def layer_bits(role: Role, spec: QuantSpec) -> tuple[int | None, int | None]:
  """(weight bits, activation bits) of a layer after the first/last rule."""
  w, a = spec.w_bits, spec.a_bits
  if role.first or role.last:
    if spec.first_last == 'float':
      return None, None
    if spec.first_last == '8bit':
      return (8 if w else None), (8 if a else None)
  return w, a


@dataclasses.dataclass(frozen=True)
class Site:
  """What the recording pass saw of one contraction.

  Attributes:
    role: the layer's Role.
    rhs_shape: kernel / second operand shape.
    rhs_contracting: contracting axes of the right operand.
  """
  role: Role
  rhs_shape: tuple[int, ...]
  rhs_contracting: tuple[int, ...]


def make_plan(sites: dict[str, Site], spec: QuantSpec,
              nonnegative: dict[tuple[str, str], bool]) -> Plan:
  """The plan of every site.

  Args:
    sites: path -> Site, from `calibration.record_sites`.
    spec: the quantization spec.
    nonnegative: (path, 'lhs'|'rhs') -> True when every calibration value of
      that activation was >= 0 (adaptive sign).

  Returns:
    path -> LayerQuant.
  """
  plan = {}
  per_channel = spec.granularity == 'per_channel'
  for path, site in sites.items():
    role = site.role
    w, a = layer_bits(role, spec)

    def act(bits, side):
      if bits is None:
        return None
      unsigned = spec.unsigned_activations and nonnegative.get(
          (path, side), False)
      return TensorQuant(bits, unsigned, None)

    lhs = act(a, 'lhs')
    if role.kind == 'einsum':
      rhs = act(a, 'rhs')
      shape = None
    else:
      rhs = None if w is None else TensorQuant(
          w, False, reference.channel_axes(len(site.rhs_shape),
                                           site.rhs_contracting, per_channel))
      shape = tuple(site.rhs_shape)
    plan[path] = LayerQuant(path, role.kind, lhs, rhs, shape)
  return plan


def structure(plan: Plan) -> tuple[Any, ...]:
  """What of `plan` shapes a program built with traced grids: all but bits.

  Two plans with equal structures give the same program once their grids
  are variables (`AqtOps(..., traced_grid=True)`), so one compiled program
  serves both (e.g. w8a8 and w2a2 of one model).
  """
  def tq(t):
    return None if t is None else (t.unsigned, t.shared_axes)
  return tuple((l.path, l.kind, tq(l.lhs), tq(l.rhs), l.rhs_shape)
               for l in (plan[k] for k in sorted(plan)))


def plan_to_json(plan: Plan) -> list[dict[str, Any]]:
  return [plan[k].to_json() for k in sorted(plan)]


def plan_from_json(items: list[dict[str, Any]]) -> Plan:
  layers = [LayerQuant.from_json(d) for d in items]
  return {l.path: l for l in layers}
