"""The 11 resizes of ImageNet-S, emulated on device with separable matmuls.

`resize(images, size, method=...)` reproduces PIL's `Image.resize` and
OpenCV's `cv2.resize` on uint8 NHWC batches. The resampling matrices that
each library's algorithm defines are built on the host at trace time
(`recipe`; numpy, float64 where the library computes in double), and the
compiled program applies them, one axis after the other, with the library's
own rounding:

* int32 contractions for the fixed-point methods (all PIL filters, OpenCV
  bilinear and Lanczos4): exact integer sums, no float32 rounding;
* float32 for OpenCV's bicubic (computed in float by the wheel's IPP path)
  and INTER_AREA (summed in OpenCV's tap order, which its float rounding
  depends on);
* gathers for nearest neighbour.

Each pass is a dense matmul against the [out, n] matrix when the band of
the matrix is wide relative to n (small images), else the same product
restricted to the band: a loop over the K taps of gathers, multiplies and
adds (`_pass`); both give identical integer results.

Measured against Pillow 13.0 and opencv-python 5.0 (x86-64 wheel): every
method within 1 uint8 level of the library on every pixel; all PIL methods
and OpenCV nearest, bilinear and Lanczos4 bit exact, INTER_AREA nearly
(OpenCV has special code for some rational factors), bicubic within one
level on ~1 pixel in 3000 (tests/test_systematic_resize.py).

Compilation: sizes are static, so each (input shape, size, method) compiles
once; images of different sizes go through `resize_many`
(`robustmq_jax.systematic.batch`), which pads them to a common square and
passes per-image taps as arrays, so one compile serves every batch with the
same padded size.
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


# Passes. A pass resamples one axis (2: width, 1: height) with taps
# (index, weight), shared [out, K] (numpy constants) or per image [B, out, K].
# It runs as a dense matmul against the [(B,) out, n] matrix when the band is
# wide relative to the axis (small images), else as a banded contraction:
# K gathers, multiplies and adds. Integer sums are exact either way.
def _use_dense(n: int, k: int) -> bool:
  return n <= max(64, 4 * k)


def _gather(x, index, axis: int):
  """x[..., index[(b,) o], ...] along `axis` (1 or 2) of [B, H, W, C]."""
  if index.ndim == 1:
    return jnp.take(x, index, axis=axis)
  shape = (index[:, :, None, None] if axis == 1
           else index[:, None, :, None])
  return jnp.take_along_axis(x, shape, axis=axis)


def _along(v, axis: int):
  """Broadcasts per-output values [(B,) out] along `axis` of [B, H, W, C]."""
  if v.ndim == 1:
    return v[None, :, None, None] if axis == 1 else v[None, None, :, None]
  return v[:, :, None, None] if axis == 1 else v[:, None, :, None]


def _matrix(index, weight, n: int):
  """Dense [(B,) out, n] from taps (numpy on host, scatter-add on device)."""
  if isinstance(index, np.ndarray) and isinstance(weight, np.ndarray):
    m = np.zeros(index.shape[:-1] + (n,), weight.dtype)
    lead = np.indices(index.shape)[:-1]
    np.add.at(m, tuple(lead) + (index,), weight)
    return jnp.asarray(m)
  lead = [jnp.arange(d).reshape((-1,) + (1,) * (index.ndim - 1 - i))
          for i, d in enumerate(index.shape[:-1])]
  return jnp.zeros(index.shape[:-1] + (n,), weight.dtype).at[
      tuple(lead) + (index,)].add(weight)


def _pass(x, taps, axis: int, *, dense: bool | None = None,
          unroll: bool = False):
  """One axis: sum_k weight[o, k] * x[index[o, k]] (int32 or float32).

  Args:
    x: [B, H, W, C].
    taps: (index, weight), [out, K] or [B, out, K].
    axis: 2 (width) or 1 (height).
    dense: force (True) or forbid (False) the dense matmul.
    unroll: sum the taps as an unrolled chain (float32 rounding exactly in
      tap order, as OpenCV's INTER_AREA; XLA may contract a loop body's
      multiply-add) instead of a loop.
  """
  index, weight = taps
  integer = np.issubdtype(weight.dtype, np.integer)
  x = x.astype(jnp.int32 if integer else jnp.float32)
  n, k = x.shape[axis], index.shape[-1]
  if dense is None:
    dense = _use_dense(n, k)
  if dense:
    m = _matrix(index, weight, n)
    b = '' if m.ndim == 2 else 'b'
    spec = (f'bhwc,{b}ow->bhoc' if axis == 2 else f'bhwc,{b}oh->bowc')
    if integer:
      return jnp.einsum(spec, x, m.astype(jnp.int32),
                        preferred_element_type=jnp.int32)
    return jnp.einsum(spec, x, m, precision=jax.lax.Precision.HIGHEST)
  if unroll:
    out = None
    for j in range(k):
      term = _gather(x, index[..., j], axis) * _along(
          jnp.asarray(weight[..., j]), axis)
      out = term if out is None else out + term
    return out
  index, weight = jnp.asarray(index), jnp.asarray(weight)

  def tap(j, acc):  # in tap order: float sums follow the library's loop
    ij = jax.lax.dynamic_index_in_dim(index, j, -1, keepdims=False)
    wj = jax.lax.dynamic_index_in_dim(weight, j, -1, keepdims=False)
    return acc + _gather(x, ij, axis) * _along(wj, axis)

  shape = list(x.shape)
  shape[axis] = index.shape[-2]
  # A loop, not K unrolled gathers: XLA would otherwise fuse the whole
  # chain of both passes into one kernel that recomputes the first pass
  # once per tap of the second (up to 10x slower on CPU).
  return jax.lax.fori_loop(0, k, tap, jnp.zeros(shape, x.dtype))


def _round22(v):
  return jnp.clip((v + _HALF) >> 22, 0, 255)


def apply_select(x, y_index, x_index):
  return _gather(_gather(x, y_index, 1), x_index, 2)


def apply_fixed2(x, xt, yt, *, vertical_first: bool = False):
  if vertical_first:
    return _round22(_pass(_round22(_pass(x, yt, 1)), xt, 2))
  return _round22(_pass(_round22(_pass(x, xt, 2)), yt, 1))


def apply_fixed1(x, xt, yt, *, vertical_first: bool = False):
  # Exact integer sums (wrapping like OpenCV's int): the order is free.
  if vertical_first:
    return _round22(_pass(_pass(x, yt, 1), xt, 2))
  return _round22(_pass(_pass(x, xt, 2), yt, 1))


def apply_linear_simd(x, xt, y_index, y_weight):
  s = _pass(x, xt, 2) >> 4
  acc = None
  for j in range(2):
    term = (_gather(s, y_index[..., j], 1) *
            _along(jnp.asarray(y_weight[..., j]), 1)) >> 16
    acc = term if acc is None else acc + term
  return jnp.clip((acc + 2) >> 2, 0, 255)


def apply_float2(x, xt, yt):
  return jnp.clip(jnp.round(_pass(_pass(x, xt, 2), yt, 1)), 0, 255)


def apply_float_seq(x, xt, yt, post_scale, half_up):
  """Float32 passes summing taps in order, as OpenCV's INTER_AREA loops."""
  t = _pass(x, xt, 2, dense=False, unroll=True)
  v = _pass(t, yt, 1, dense=False, unroll=True) * post_scale
  r = jnp.where(half_up, jnp.floor(v + 0.5), jnp.round(v))
  return jnp.clip(r, 0, 255)


def apply_recipe(images: jax.Array, r: Recipe) -> jax.Array:
  """Applies a host Recipe to a uint8 NHWC batch of its input size."""
  if tuple(images.shape[1:3]) != r.in_size:
    raise ValueError(f'images {images.shape} do not match {r.in_size}')
  xt = (r.x.index, r.x.weight)
  yt = (r.y.index, r.y.weight)
  if r.kind == 'select':
    out = apply_select(images, r.y.index[:, 0], r.x.index[:, 0])
  elif r.kind == 'fixed2':
    out = apply_fixed2(images, xt, yt, vertical_first=r.vertical_first)
  elif r.kind == 'fixed1':
    (h, w), (oh, ow) = r.in_size, r.out_size
    out = apply_fixed1(images, xt, yt,
                       vertical_first=w * oh * (h + ow) < h * ow * (w + oh))
  elif r.kind == 'linear_simd':
    out = apply_linear_simd(images, xt, r.y.index, r.y.weight)
  elif r.kind == 'float2':
    out = apply_float2(images, xt, yt)
  else:
    out = apply_float_seq(images, xt, yt, np.float32(r.post_scale),
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
                  method: str, *, per_image: bool = False) -> jax.Array:
  """Applies one method's per-image plan (see `batch.plan_batch`).

  Args:
    images: uint8 [B, S, S, C], each image at the top-left of its square.
    plan: this method's arrays: '<kind>/<field>' [B, ...] for every kind
      used in the batch, and 'branch' [B] when more than one kind is used.
    method: the method (for error messages).
    per_image: process one image at a time (`lax.map`), computing only the
      image's own kind. On CPU this is several times faster for large
      images (the working set stays in cache); keep False for batches
      sharded over devices and on accelerators, where a batch mixing kinds
      computes every kind present and selects per image.

  Returns:
    uint8 [B, oh, ow, C].
  """
  kinds = sorted({k.split('/')[0] for k in plan if '/' in k})  # as planned
  if not kinds:
    raise ValueError(f'empty plan for {method}')

  def run(x, p):
    outs = [_apply_kind(x, kind, p).astype(jnp.uint8) for kind in kinds]
    out = outs[0]
    for i, o in enumerate(outs[1:], start=1):
      out = jnp.where((p['branch'] == i)[:, None, None, None], o, out)
    return out

  if not per_image:
    return run(images, plan)

  def one(args):
    x, p = args
    x, p = x[None], {k: v[None] for k, v in p.items()}
    if len(kinds) == 1:
      return run(x, p)[0]
    # Only the image's own kind runs (a conditional per image).
    return jax.lax.switch(
        p['branch'][0],
        [lambda k=k: _apply_kind(x, k, p).astype(jnp.uint8)[0]
         for k in kinds])

  return jax.lax.map(one, (images, dict(plan)))


def _taps(plan, kind: str, axis: str):
  return plan[f'{kind}/{axis}_index'], plan[f'{kind}/{axis}_weight']


def _apply_kind(x, kind: str, plan):
  if kind == 'select':
    return apply_select(x, plan['select/y_index'], plan['select/x_index'])
  xt, yt = _taps(plan, kind, 'x'), _taps(plan, kind, 'y')
  if kind == 'fixed2':
    return apply_fixed2(x, xt, yt)
  if kind == 'fixed2v':
    return apply_fixed2(x, xt, yt, vertical_first=True)
  if kind == 'fixed1':
    return apply_fixed1(x, xt, yt)
  if kind == 'linear_simd':
    return apply_linear_simd(x, xt, *yt)
  if kind == 'float2':
    return apply_float2(x, xt, yt)
  if kind == 'float_seq':
    return apply_float_seq(
        x, xt, yt, plan['float_seq/post_scale'][:, None, None, None],
        plan['float_seq/half_up'][:, None, None, None])
  raise ValueError(f'unknown plan kind {kind!r}')
