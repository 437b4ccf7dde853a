"""The 11 resizes of ImageNet-S, emulated on device with separable matmuls.

`resize(images, size, method=...)` reproduces PIL's `Image.resize` and
OpenCV's `cv2.resize` on uint8 NHWC batches: the resampling matrices of the
library's algorithm are built on the host at trace time (`recipe`), and the
compiled program applies them as two contractions with the library's own
rounding: int32 contractions for the fixed-point methods (exact: no float32
rounding), float32 at HIGHEST precision for OpenCV's float methods, gathers
for nearest neighbour. Measured against Pillow 13.0 and opencv-python 5.0:
every method within 1 uint8 level of the library on every pixel; PIL's six
methods and OpenCV's nearest, linear, area (integer factors) and Lanczos4 are
bit exact (tests/test_systematic_resize.py).

Compilation: sizes are static, so each (input shape, size, method) compiles
once; images of different sizes go through `resize_many`
(`robustmq_jax.systematic.batch`), which pads them to a common square and
passes per-image matrices as arrays, so one compile serves every batch with
the same padded size.
"""

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from robustmq_jax.errors import invalid
from robustmq_jax.systematic import resize_cv2
from robustmq_jax.systematic import resize_pil
from robustmq_jax.systematic.recipe import Recipe

PIL_METHODS = tuple(f'pil_{m}' for m in resize_pil.METHODS)
CV2_METHODS = tuple(f'cv2_{m}' for m in resize_cv2.METHODS)
# ImageNet-S's 11 resize methods, PIL first.
METHODS = PIL_METHODS + CV2_METHODS
REFERENCE_METHOD = 'pil_bilinear'
_HALF = 1 << 21


def recipe(in_size: tuple[int, int], size: tuple[int, int],
           method: str) -> Recipe:
  """The host-side Recipe of `method` resizing (h, w) -> (oh, ow)."""
  if method not in METHODS:
    raise invalid('method', method, METHODS)
  (h, w), (oh, ow) = in_size, size
  lib, _, name = method.partition('_')
  build = resize_pil.recipe if lib == 'pil' else resize_cv2.recipe
  return build(int(h), int(w), int(oh), int(ow), name)


# Contractions. `m` is [out, n] (shared) or [B, out, n] (per image).
def _width(x, m):
  spec = 'bhwc,ow->bhoc' if m.ndim == 2 else 'bhwc,bow->bhoc'
  return _contract(spec, x, m)


def _height(x, m):
  spec = 'bhoc,ph->bpoc' if m.ndim == 2 else 'bhoc,bph->bpoc'
  return _contract(spec, x, m)


def _contract(spec, x, m):
  if jnp.issubdtype(m.dtype, jnp.integer):
    return jnp.einsum(spec, x.astype(jnp.int32), m.astype(jnp.int32),
                      preferred_element_type=jnp.int32)
  return jnp.einsum(spec, x.astype(jnp.float32), m,
                    precision=jax.lax.Precision.HIGHEST)


def _round22(v):
  return jnp.clip((v + _HALF) >> 22, 0, 255)


def _rows(x, index):
  """x[b, index[(b,) o]] along axis 1."""
  if index.ndim == 1:
    return jnp.take(x, index, axis=1)
  return jnp.take_along_axis(x, index[:, :, None, None], axis=1)


def _cols(x, index):
  if index.ndim == 1:
    return jnp.take(x, index, axis=2)
  return jnp.take_along_axis(x, index[:, None, :, None], axis=2)


def _per_row(b):
  """Broadcasts per-output-row values [(B,) oh] against [B, oh, ow, C]."""
  return b[None, :, None, None] if b.ndim == 1 else b[:, :, None, None]


def apply_select(x, y_index, x_index):
  return _cols(_rows(x, y_index), x_index)


def apply_fixed2(x, mx, my, *, vertical_first: bool = False):
  if vertical_first:
    return _round22(_width(_round22(_height(x, my)), mx))
  return _round22(_height(_round22(_width(x, mx)), my))


def apply_fixed1(x, mx, my, *, vertical_first: bool = False):
  # Exact integer sums (wrapping like OpenCV's int): the order is free.
  if vertical_first:
    return _round22(_width(_height(x, my), mx))
  return _round22(_height(_width(x, mx), my))


def apply_linear_simd(x, mx, y_index, y_weight):
  s = _width(x, mx) >> 4
  acc = jnp.zeros((), jnp.int32)
  for k in range(2):
    rows = _rows(s, y_index[..., k])
    acc = acc + ((rows * _per_row(y_weight[..., k])) >> 16)
  return jnp.clip((acc + 2) >> 2, 0, 255)


def apply_float2(x, mx, my):
  return jnp.clip(jnp.round(_height(_width(x, mx), my)), 0, 255)


def apply_float_seq(x, x_index, x_weight, y_index, y_weight, post_scale,
                    half_up):
  """Float32 passes summing taps in order, as OpenCV's INTER_AREA loops."""
  t = None
  xf = x.astype(jnp.float32)
  for k in range(x_index.shape[-1]):
    w = x_weight[..., k]
    w = w[None, None, :, None] if w.ndim == 1 else w[:, None, :, None]
    term = _cols(xf, x_index[..., k]) * w
    t = term if t is None else t + term
  v = None
  for k in range(y_index.shape[-1]):
    term = _rows(t, y_index[..., k]) * _per_row(y_weight[..., k])
    v = term if v is None else v + term
  v = v * post_scale
  r = jnp.where(half_up, jnp.floor(v + 0.5), jnp.round(v))
  return jnp.clip(r, 0, 255)


def apply_recipe(images: jax.Array, r: Recipe) -> jax.Array:
  """Applies a host Recipe to a uint8 NHWC batch of its input size."""
  if tuple(images.shape[1:3]) != r.in_size:
    raise ValueError(f'images {images.shape} do not match {r.in_size}')
  if r.kind == 'select':
    out = apply_select(images, jnp.asarray(r.y.index[:, 0]),
                       jnp.asarray(r.x.index[:, 0]))
  elif r.kind == 'fixed2':
    out = apply_fixed2(images, jnp.asarray(r.x.dense()),
                       jnp.asarray(r.y.dense()),
                       vertical_first=r.vertical_first)
  elif r.kind == 'fixed1':
    (h, w), (oh, ow) = r.in_size, r.out_size
    out = apply_fixed1(images, jnp.asarray(r.x.dense()),
                       jnp.asarray(r.y.dense()),
                       vertical_first=w * oh * (h + ow) < h * ow * (w + oh))
  elif r.kind == 'linear_simd':
    out = apply_linear_simd(images, jnp.asarray(r.x.dense()),
                            jnp.asarray(r.y.index), jnp.asarray(r.y.weight))
  elif r.kind == 'float2':
    out = apply_float2(images, jnp.asarray(r.x.dense()),
                       jnp.asarray(r.y.dense()))
  else:
    out = apply_float_seq(images, jnp.asarray(r.x.index),
                          jnp.asarray(r.x.weight), jnp.asarray(r.y.index),
                          jnp.asarray(r.y.weight), np.float32(r.post_scale),
                          r.half_up)
  return out.astype(jnp.uint8)


def resize(images: jax.Array, size: tuple[int, int], *,
           method: str) -> jax.Array:
  """Resizes a uint8 NHWC batch exactly as PIL or OpenCV would.

  Args:
    images: uint8 [B, H, W, C] (or [H, W, C]).
    size: (height, width) of the output.
    method: one of `METHODS`: 'pil_nearest', 'pil_bilinear', 'pil_bicubic',
      'pil_box', 'pil_hamming', 'pil_lanczos', 'cv2_nearest', 'cv2_linear',
      'cv2_area', 'cv2_cubic', 'cv2_lanczos4'.

  Returns:
    uint8 [B, height, width, C]. Pure and jittable; the resampling matrices
    are compile-time constants, so each (input shape, size, method)
    compiles once.
  """
  images = jnp.asarray(images)
  if images.dtype != jnp.uint8:
    raise invalid('images.dtype', str(images.dtype), 'uint8')
  single = images.ndim == 3
  if single:
    images = images[None]
  if images.ndim != 4:
    raise invalid('images.shape', tuple(images.shape), 'NHWC or HWC')
  size = tuple(int(s) for s in size)
  if len(size) != 2 or min(size) < 1:
    raise invalid('size', size, '(height, width) of positive ints')
  out = apply_recipe(images, recipe(images.shape[1:3], size, method))
  return out[0] if single else out


def apply_planned(images: jax.Array, plan: Mapping[str, jax.Array],
                  method: str) -> jax.Array:
  """Applies one method's per-image plan (see `batch.plan_batch`).

  Args:
    images: uint8 [B, S, S, C], each image at the top-left of its square.
    plan: this method's arrays: '<kind>/<field>' [B, ...] for every kind
      used in the batch, and 'branch' [B] when more than one kind is used.
    method: the method (for error messages).

  Returns:
    uint8 [B, oh, ow, C].
  """
  kinds = sorted({k.split('/')[0] for k in plan if '/' in k})  # as planned
  if not kinds:
    raise ValueError(f'empty plan for {method}')
  outs = [_apply_kind(images, kind, plan) for kind in kinds]
  out = outs[0]
  for i, o in enumerate(outs[1:], start=1):
    pick = plan['branch'] == i
    out = jnp.where(pick[:, None, None, None], o, out)
  return out.astype(jnp.uint8)


def _dense(plan, axis: str, kind: str, n: int):
  """[B, out, n] matrices from per-image taps (scatter-add)."""
  index = plan[f'{kind}/{axis}_index']
  weight = plan[f'{kind}/{axis}_weight']
  b, o, _ = index.shape
  bi = jnp.arange(b)[:, None, None]
  oi = jnp.arange(o)[None, :, None]
  return jnp.zeros((b, o, n), weight.dtype).at[bi, oi, index].add(weight)


def _apply_kind(x, kind: str, plan):
  s = x.shape[1]
  if kind == 'select':
    return apply_select(x, plan['select/y_index'], plan['select/x_index'])
  if kind == 'fixed2' and 'fixed2/transpose' not in plan:
    return apply_fixed2(x, _dense(plan, 'x', kind, s),
                        _dense(plan, 'y', kind, s))
  if kind == 'fixed2':
    flip = plan['fixed2/transpose'][:, None, None, None]
    xt = jnp.where(flip, jnp.swapaxes(x, 1, 2), x)
    out = apply_fixed2(xt, _dense(plan, 'x', kind, s),
                       _dense(plan, 'y', kind, s))
    return jnp.where(flip, jnp.swapaxes(out, 1, 2), out)
  if kind == 'fixed2v':
    return apply_fixed2(x, _dense(plan, 'x', kind, s),
                        _dense(plan, 'y', kind, s), vertical_first=True)
  if kind == 'fixed1':
    return apply_fixed1(x, _dense(plan, 'x', kind, s),
                        _dense(plan, 'y', kind, s))
  if kind == 'linear_simd':
    return apply_linear_simd(x, _dense(plan, 'x', kind, s),
                             plan['linear_simd/y_index'],
                             plan['linear_simd/y_weight'])
  if kind == 'float2':
    return apply_float2(x, _dense(plan, 'x', kind, s),
                        _dense(plan, 'y', kind, s))
  if kind == 'float_seq':
    return apply_float_seq(
        x, plan['float_seq/x_index'], plan['float_seq/x_weight'],
        plan['float_seq/y_index'], plan['float_seq/y_weight'],
        plan['float_seq/post_scale'][:, None, None, None],
        plan['float_seq/half_up'][:, None, None, None])
  raise ValueError(f'unknown plan kind {kind!r}')
