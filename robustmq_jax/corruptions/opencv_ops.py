"""OpenCV operations in JAX, bit-compatible on integer images: Canny,
distance transform, histogram equalisation, 3x3 box blur, and the water
branch of the spatter corruption built from them."""

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from robustmq_jax.corruptions import filters

_SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.int32)
_EMBOSS = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], np.int32)
_TG22 = int(0.4142135623730950488016887242097 * (1 << 15) + 0.5)
# OpenCV's 5x5 L2 chamfer metrics (1, 1.4, 2.1969) in 16-bit fixed point.
_HV, _DIAG, _KNIGHT = 65536, round(1.4 * 65536), round(2.1969 * 65536)
_CHAMFER = [((dy, dx), _HV) for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0))]
_CHAMFER += [((dy, dx), _DIAG) for dy in (-1, 1) for dx in (-1, 1)]
_CHAMFER += [((dy, dx), _KNIGHT) for dy, dx in (
    (1, 2), (2, 1), (-1, 2), (-2, 1), (1, -2), (2, -1), (-1, -2), (-2, -1))]


def _padded(x, fill, r=2):
  return jnp.pad(x, ((r, r), (r, r)), constant_values=fill)


def _at(p, shape, dy, dx, r=2):
  """From `_padded(x)`: y[i, j] = x[i + dy, j + dx] (the fill outside)."""
  h, w = shape
  return lax.slice(p, (r + dy, r + dx), (r + dy + h, r + dx + w))


def canny(img: jax.Array, low: int = 50, high: int = 150) -> jax.Array:
  """OpenCV `Canny(img, low, high)` (3x3 Sobel, L1 norm) of an int HW image.

  Sobel with replicated borders; non-maximum suppression in four sectors
  with OpenCV's fixed-point tangents and its mixed strict/non-strict
  comparisons (zero magnitude outside the image); hysteresis as 8-connected
  growth from the strong pixels through the weak ones.

  Returns:
    bool [H, W] edges.
  """
  img = img.astype(jnp.int32)
  dx = filters.correlate2d_small(img, _SOBEL_X, axes=(0, 1), mode='nearest')
  dy = filters.correlate2d_small(img, _SOBEL_X.T, axes=(0, 1),
                                 mode='nearest')
  mag = jnp.abs(dx) + jnp.abs(dy)
  ax = jnp.abs(dx)
  ay = jnp.abs(dy) << 15
  tg22x = ax * _TG22
  tg67x = tg22x + (ax << 16)
  s = jnp.where((dx ^ dy) < 0, -1, 1)
  pm = _padded(mag, 0)
  left, right = _at(pm, mag.shape, 0, -1), _at(pm, mag.shape, 0, 1)
  up, down = _at(pm, mag.shape, -1, 0), _at(pm, mag.shape, 1, 0)
  up_l, up_r = _at(pm, mag.shape, -1, -1), _at(pm, mag.shape, -1, 1)
  down_l, down_r = _at(pm, mag.shape, 1, -1), _at(pm, mag.shape, 1, 1)
  horizontal = (mag > left) & (mag >= right)
  vertical = (mag > up) & (mag >= down)
  # s = 1: compare up-left and down-right; s = -1: up-right and down-left.
  diagonal = jnp.where(s > 0, (mag > up_l) & (mag > down_r),
                       (mag > up_r) & (mag > down_l))
  keep = jnp.where(ay < tg22x, horizontal,
                   jnp.where(ay > tg67x, vertical, diagonal))
  weak = (mag > low) & keep
  strong = weak & (mag > high)

  def grow(state):
    old, _ = state
    edges = old
    # Several growth steps per loop test: the test and the loop cost more
    # than a step (same fixed point).
    for _ in range(4):
      near = edges
      pe = _padded(edges, False, 1)
      for dy_, dx_ in ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1),
                       (1, -1), (1, 0), (1, 1)):
        near = near | _at(pe, edges.shape, dy_, dx_, 1)
      edges = edges | (weak & near)
    return edges, jnp.any(edges != old)

  edges, _ = lax.while_loop(lambda s_: s_[1], grow, (strong, jnp.any(strong)))
  return edges


def distance_to_zero(mask_zero: jax.Array, cap: float) -> jax.Array:
  """OpenCV `distanceTransform(src, DIST_L2, 5)`, values up to `cap`.

  Chamfer distance to the nearest pixel where `mask_zero` is True, in
  OpenCV's 16-bit fixed point; pixels farther than `cap` get at least cap.
  Runs ceil(cap) relaxation sweeps (every step costs >= 1).

  Returns:
    int32 [H, W] in units of 2^-16 pixels.
  """
  big = int((cap + 3) * 65536)
  d = jnp.where(mask_zero, 0, big).astype(jnp.int32)

  def sweep(_, d):
    out = d
    pd = _padded(d, big)
    for (dy, dx), wgt in _CHAMFER:
      out = jnp.minimum(out, _at(pd, d.shape, dy, dx) + wgt)
    return out

  return lax.fori_loop(0, int(np.ceil(cap)), sweep, d)


def equalize_hist(img: jax.Array) -> jax.Array:
  """OpenCV `equalizeHist` of an int HW image with values 0..255."""
  flat = img.reshape(-1)
  hist = jnp.zeros(256, jnp.int32).at[flat].add(1)
  total = flat.shape[0]
  first = jnp.argmax(hist > 0)
  cum = jnp.cumsum(hist)
  scale = jnp.float32(255.0) / (total - hist[first]).astype(jnp.float32)
  lut = jnp.round((cum - hist[first]).astype(jnp.float32) * scale)
  lut = jnp.clip(lut, 0, 255)
  lut = jnp.where(jnp.arange(256) <= first, 0, lut).astype(jnp.int32)
  out = lut[img]
  return jnp.where(hist[first] == total, first, out)


def box3_u8(img: jax.Array) -> jax.Array:
  """cv2.blur(uint8, (3, 3)): reflect-101, rounded to nearest."""
  s = filters.correlate2d_small(img.astype(jnp.int32), np.ones((3, 3),
                                np.int32), axes=(0, 1))
  return (s * 2 + 9) // 18  # round(s / 9); s / 9 is never a tie.


def water_mask(liquid_u8: jax.Array) -> jax.Array:
  """The water branch from the uint8 layer to the (unnormalised) mask m."""
  edges = canny(liquid_u8)
  dist = distance_to_zero(edges, 20.0)  # 255 - Canny is 0 on edges.
  dist = jnp.minimum(dist, 20 * 65536)  # threshold(..., 20, THRESH_TRUNC)
  # cv2.blur on float32, then astype(uint8): floor(sum / 9), in fixed point.
  s = filters.correlate2d_small(dist, np.ones((3, 3), np.int32), axes=(0, 1))
  dist = s // (9 * 65536)
  dist = equalize_hist(dist)
  dist = filters.correlate2d_small(dist, _EMBOSS, axes=(0, 1))
  dist = jnp.clip(dist, 0, 255)  # filter2D to CV_8U saturates.
  dist = box3_u8(dist)
  return liquid_u8.astype(jnp.float32) * dist.astype(jnp.float32)


