"""The weight layers of a model, found by tracing it once through `Ops`.

Both defenses act on "every conv and dense weight": Defensive Quantization
penalises each kernel's Gram matrix, and the layer-wise selection walks the
kernels in execution order. A kernel's shape alone does not say which axes
meet the input (a ViT ``out`` kernel is (heads, head_dim, D), a ``query``
kernel (D, heads, head_dim)), so we record what each contraction actually
does: `weight_layers` traces the model abstractly (`jax.eval_shape`, nothing
is computed) with an `Ops` whose contractions note their operands.
"""

import dataclasses
import functools
import math
from typing import Any, Callable

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

from robustmq_jax.models.ops import Ops
from robustmq_jax.models.ops import Role


@dataclasses.dataclass(frozen=True)
class WeightLayer:
  """One Dense / DenseGeneral / Conv kernel as the model uses it.

  Attributes:
    path: the layer's Role path, which is also its module path in
      ``variables['params']`` (the kernel is ``<path>/kernel``).
    kind: 'dense' or 'conv'.
    kernel_shape: shape of the kernel parameter.
    contracting: kernel axes contracted with the input (the rest are output
      axes). Conv (HWIO): (0, 1, 2).
    input_shape: shape of the layer's input in the trace (batch 1).
    conv: for convolutions, the `lax.conv_general_dilated` keywords other
      than the operands (strides, padding, dilations, dimension numbers,
      groups), as a tuple of items; None for dense layers.
    first: the model's first contraction.
    last: the classifier head.
  """
  path: str
  kind: str
  kernel_shape: tuple[int, ...]
  contracting: tuple[int, ...]
  input_shape: tuple[int, ...]
  conv: tuple[tuple[str, Any], ...] | None = None
  first: bool = False
  last: bool = False

  @property
  def fan_in(self) -> int:
    """Number of kernel entries feeding one output (the matrix width)."""
    return math.prod(self.kernel_shape[a] for a in self.contracting)

  @property
  def fan_out(self) -> int:
    """Number of outputs per position (the matrix height)."""
    return math.prod(self.kernel_shape) // self.fan_in

  def matrix(self, kernel: jax.Array) -> jax.Array:
    """The kernel as an (outputs x inputs) matrix (see `kernel_matrix`)."""
    return kernel_matrix(kernel, self.contracting)


def kernel_matrix(kernel: jax.Array, contracting: tuple[int, ...]
                  ) -> jax.Array:
  """Reshapes a kernel to the (fan_out x fan_in) matrix it applies.

  A Dense kernel (in, out) becomes W = kernel.T, so y = W x. A Conv kernel
  (kh, kw, c_in, c_out) becomes the c_out x (kh * kw * c_in) matrix that
  multiplies each receptive field (the DQ paper's "kernel reshaped to a
  matrix"; its spectral norm is not the norm of the convolution operator,
  see `lipschitz.conv_operator_norm`).

  Args:
    kernel: the kernel parameter.
    contracting: the axes contracted with the input.

  Returns:
    A 2-D array [fan_out, fan_in].
  """
  out_axes = tuple(a for a in range(kernel.ndim) if a not in contracting)
  fan_in = math.prod(kernel.shape[a] for a in contracting)
  w = jnp.transpose(kernel, out_axes + tuple(contracting))
  return jnp.reshape(w, (-1, fan_in))


def _norm_axes(axes, ndim) -> tuple[int, ...]:
  return tuple(sorted(int(a) % ndim for a in axes))


class _RecordingOps(Ops):
  """Float contractions that note their operands in `self.layers`."""

  def __init__(self):
    self.layers: dict[str, WeightLayer] = {}

  def _add(self, layer: WeightLayer) -> None:
    self.layers.setdefault(layer.path, layer)

  def dot_general_cls(self, role: Role) -> Any:

    def dot(lhs, rhs, dimension_numbers, precision=None,
            preferred_element_type=None):
      contracting = _norm_axes(dimension_numbers[0][1], rhs.ndim)
      self._add(WeightLayer(role.path, 'dense', tuple(rhs.shape), contracting,
                            tuple(lhs.shape), None, role.first, role.last))
      return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                             preferred_element_type=preferred_element_type)

    return lambda: dot

  def conv_general_dilated_cls(self, role: Role) -> Any:

    def conv(lhs, rhs, window_strides, padding, lhs_dilation=None,
             rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
             batch_group_count=1, precision=None,
             preferred_element_type=None):
      kwargs = dict(window_strides=window_strides, padding=padding,
                    lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
                    dimension_numbers=dimension_numbers,
                    feature_group_count=feature_group_count,
                    batch_group_count=batch_group_count)
      self._add(WeightLayer(
          role.path, 'conv', tuple(rhs.shape),
          tuple(range(rhs.ndim - 1)), tuple(lhs.shape),
          tuple((k, _hashable(v)) for k, v in kwargs.items()),
          role.first, role.last))
      return lax.conv_general_dilated(lhs, rhs, precision=precision,
                                      preferred_element_type=(
                                          preferred_element_type),
                                      **kwargs)

    return lambda: conv


def _hashable(v):
  if isinstance(v, (list, tuple)):
    items = [_hashable(x) for x in v]
    # Keep namedtuples (ConvDimensionNumbers) as they are.
    return type(v)(*items) if hasattr(v, '_fields') else tuple(items)
  return v


def weight_layers(module_fn: Callable[[Ops], nn.Module], variables: Any,
                  image_shape: tuple[int, ...]) -> dict[str, WeightLayer]:
  """Every Dense/Conv kernel of a model, in execution order.

  Args:
    module_fn: ops -> the model built with those ops (e.g.
      ``lambda ops: models.get_model(name, num_classes=10, ops=ops)``).
    variables: the model's variables (shapes are all that is read).
    image_shape: (H, W, C) of one input image.

  Returns:
    Role path -> WeightLayer, ordered as the forward pass calls them.
  """
  ops = _RecordingOps()
  module = module_fn(ops)
  jax.eval_shape(
      lambda v, x: module.apply(v, x, train=False), variables,
      jax.ShapeDtypeStruct((1,) + tuple(image_shape), jnp.float32))
  return dict(ops.layers)


def get_kernel(params: Any, path: str) -> jax.Array:
  """``params[p0][p1]...['kernel']`` for a '/'-separated module path."""
  node = params
  for part in path.split('/'):
    node = node[part]
  return node['kernel']


# One function object per conv geometry (a stable identity for jit's cache);
# a handful per model, bounded.
@functools.lru_cache(maxsize=512)
def _conv_fn(conv: tuple[tuple[str, Any], ...]):
  kwargs = dict(conv)
  return lambda x, w: lax.conv_general_dilated(x, w, **kwargs)


def apply_layer(layer: WeightLayer, x: jax.Array, kernel: jax.Array
                ) -> jax.Array:
  """The layer's linear map (no bias) applied to input `x`."""
  if layer.kind == 'conv':
    return _conv_fn(layer.conv)(x, kernel)
  nc = len(layer.contracting)
  lhs_axes = tuple(range(x.ndim - nc, x.ndim))
  return lax.dot_general(x, kernel, ((lhs_axes, layer.contracting), ((), ())))


class _CaptureOps(Ops):
  """Float contractions that keep each weight layer's input (at trace time)."""

  def __init__(self, paths: frozenset[str] | None):
    self.paths = paths
    self.values: dict[str, jax.Array] = {}

  def _keep(self, path, lhs):
    if self.paths is None or path in self.paths:
      self.values.setdefault(path, lhs)

  def dot_general_cls(self, role: Role) -> Any:
    def dot(lhs, rhs, dimension_numbers, **kwargs):
      self._keep(role.path, lhs)
      return lax.dot_general(lhs, rhs, dimension_numbers, **kwargs)
    return lambda: dot

  def conv_general_dilated_cls(self, role: Role) -> Any:
    def conv(lhs, rhs, *args, **kwargs):
      self._keep(role.path, lhs)
      return lax.conv_general_dilated(lhs, rhs, *args, **kwargs)
    return lambda: conv


def input_capture(module_fn: Callable[[Ops], nn.Module],
                  paths: Any = None) -> Callable[[Any, jax.Array], Any]:
  """A jitted ``(variables, images) -> (logits, {path: layer input})``.

  Args:
    module_fn: ops -> the model.
    paths: Role paths to keep (default: every weight layer).

  Returns:
    The function; layer inputs are those of the float model.
  """
  keep = None if paths is None else frozenset(paths)

  def run(variables, images):
    ops = _CaptureOps(keep)
    logits = module_fn(ops).apply(variables, images, train=False)
    return logits, dict(ops.values)

  return jax.jit(run)
