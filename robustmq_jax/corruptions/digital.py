"""Digital corruptions: contrast, brightness, saturate, elastic transform
and pixelate (JPEG is in `jpeg.py`).

dm-pix provides contrast and the HSV conversions (they match scikit-image's
`rgb2hsv` / `hsv2rgb`, including its tie-breaking, to float32 precision);
its blur and elastic deformation do not match the reference (zero padding,
no random affine) and are not used. Severity is traced in all five:
elastic's smoothing is a matrix built from the traced sigma; pixelate's
sampling tables are gathered per severity.
"""

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

from robustmq_jax.corruptions import filters
from robustmq_jax.corruptions import rng
from robustmq_jax.corruptions.base import corruption


@corruption('contrast', family='digital', random=False)
def contrast(seed, x, p, static):
  """Contrast: (x - m) * c + m with per-channel means m."""
  del seed, static
  return dm_pix.adjust_contrast(x, p['factor'])


@corruption('brightness', family='weather', random=False)
def brightness(seed, x, p, static):
  """Brightness: HSV value + delta, clipped (skimage's conversions)."""
  del seed, static
  hsv = dm_pix.rgb_to_hsv(x)
  hsv = hsv.at[..., 2].set(jnp.clip(hsv[..., 2] + p['delta'], 0.0, 1.0))
  return dm_pix.hsv_to_rgb(hsv)


@corruption('saturate', family='digital', random=False)
def saturate(seed, x, p, static):
  """Saturate: HSV saturation * scale + shift, clipped."""
  del seed, static
  hsv = dm_pix.rgb_to_hsv(x)
  hsv = hsv.at[..., 1].set(
      jnp.clip(hsv[..., 1] * p['scale'] + p['shift'], 0.0, 1.0))
  return dm_pix.hsv_to_rgb(hsv)


# ---------------------------------------------------------------------------
# Pixelate: PIL BOX down to int(side * c), BOX back up.
#
# PIL's BOX resampling gives each output pixel the (normalised) input pixels
# whose centres fall in its box, with 22-bit integer weights and
# round-half-up after each (horizontal, then vertical) pass. All taps of a
# box carry the same weight, round(2^22 / n) for a box of n pixels, so a
# pass is (box sum * weight + 2^21) >> 22. Up-sampling by BOX copies one
# source pixel, so output pixel j of the round trip reads the box of the
# small pixel it copies: input pixels j + d for d in a window of offsets
# that stays within a few pixels of j. A pass is therefore a filter with
# per-position 0/1 taps over a small static range of offsets: shifted
# slices and masks, no gather.


def _box_coeffs(in_size: int, out_size: int):
  """Pillow's `precompute_coeffs` for the BOX filter (8-bit weights)."""
  scale = in_size / out_size
  filterscale = max(scale, 1.0)
  support = 0.5 * filterscale
  taps, weights = [], []
  for xx in range(out_size):
    center = (xx + 0.5) * scale
    xmin = max(int(center - support + 0.5), 0)
    xmax = min(int(center + support + 0.5), in_size) - xmin
    w = []
    for x in range(xmax):
      arg = (x + xmin - center + 0.5) / filterscale
      w.append(1.0 if -0.5 < arg <= 0.5 else 0.0)
    tot = sum(w)
    w = [v / tot for v in w] if tot else w
    taps.append(list(range(xmin, xmin + xmax)))
    weights.append([int(0.5 + v * (1 << 22)) if v >= 0 else
                    int(-0.5 + v * (1 << 22)) for v in w])
  return taps, weights


def pixelate_plan(side: int, factor: float):
  """One axis of the round trip: per output pixel of the full side, the
  first tap, the box size and the integer weight of its box.

  Returns:
    (start, size, weight): int32 [side] each.
  """
  small = int(side * factor)
  d_taps, d_w = _box_coeffs(side, small)
  u_taps, _ = _box_coeffs(small, side)
  start, size, weight = (np.zeros(side, np.int32) for _ in range(3))
  for j in range(side):
    (src,) = u_taps[j]
    on = [t for t, w in zip(d_taps[src], d_w[src]) if w]
    assert on == list(range(on[0], on[0] + len(on))), 'box not contiguous'
    assert len(set(w for w in d_w[src] if w)) == 1, 'unequal box weights'
    start[j], size[j], weight[j] = on[0], len(on), max(d_w[src])
  return start, size, weight


def _prepare_pixelate(table, h, w):
  factors = table.fields('pixelate')['factor']
  out, static = {}, {}
  for axis, side in (('h', h), ('w', w)):
    plans = [pixelate_plan(side, c) for c in factors]
    j = np.arange(side)
    lo = min(int((st - j).min()) for st, _, _ in plans)
    hi = max(int((st + n - j).max()) for st, n, _ in plans)  # exclusive
    d = np.arange(lo, hi)[:, None]
    # taps[s, k, j]: input j + lo + k is in the box of output j.
    out[f'taps_{axis}'] = np.stack([
        ((st - j <= d) & (d < st + n - j)) for st, n, _ in plans])
    out[f'weight_{axis}'] = np.stack([wt for _, _, wt in plans])
    static[f'offset_{axis}'] = lo
  return out, static


def _box_pass(x, taps, weight, lo, axis):
  """One PIL BOX round trip (down and back up) of uint8 values on `axis`.

  Args:
    x: int16 values 0..255.
    taps: bool [K, n]: offset lo + k feeds output j.
    weight: int32 [n]: the integer weight of each output's box.
    lo: the smallest offset (static).
    axis: the axis to resample, of length n.
  """
  n = x.shape[axis]
  k = taps.shape[0]
  before, after = max(-lo, 0), max(lo + k - 1, 0)
  xp = filters.pad_axis(x, axis, before, after, 'zero')
  shape = [1] * x.ndim
  shape[axis] = n
  acc = None
  for t in range(k):
    start = before + lo + t
    sl = jax.lax.slice_in_dim(xp, start, start + n, axis=axis)
    term = jnp.where(taps[t].reshape(shape), sl, 0)
    acc = term if acc is None else acc + term  # <= 5 * 255: int16 holds it
  acc = acc.astype(jnp.int32) * weight.reshape(shape)
  return jnp.clip((acc + (1 << 21)) >> 22, 0, 255).astype(x.dtype)


@corruption('pixelate', family='digital', random=False,
            prepare=_prepare_pixelate)
def pixelate(seed, x, p, static):
  """Pixelate: PIL BOX resize down to int(side * c), then BOX back up (as
  hendrycks/robustness; `imagecorruptions` up-samples with NEAREST). The
  input is rounded to uint8 first, as PIL needs."""
  del seed
  h, w, c = x.shape
  # int16: half the memory traffic of int32. Each pass runs along the
  # leading axis, where shifted slices are whole contiguous rows (along the
  # width of an HWC image XLA's loops do not vectorise: 3-value rows, or
  # per-value bounds checks on a flattened axis); the transposes fuse into
  # the neighbouring loops.
  u8 = jnp.round(x * 255.0).astype(jnp.int16).transpose(1, 0, 2)

  def horizontal(v):
    v = _box_pass(v, p['taps_w'], p['weight_w'], static['offset_w'], 0)
    return v.transpose(1, 0, 2)

  # The vertical pass reads every horizontal result several times: store
  # it rather than let XLA recompute it per read.
  u8 = filters.unfused(horizontal, u8, p['weight_w'][0] > 0)
  u8 = _box_pass(u8, p['taps_h'], p['weight_h'], static['offset_h'], 0)
  return u8.astype(jnp.float32) / 255.0


# ---------------------------------------------------------------------------
# Elastic transform (hendrycks/robustness; `imagecorruptions` has a different
# one without the affine part).


def affine_points(h: int, w: int) -> np.ndarray:
  """The reference's three source points (x, y) around the centre."""
  centre = np.float32((h, w)) // 2
  half = min(h, w) // 3
  return np.float32([centre + half,
                     [centre[0] + half, centre[1] - half],
                     centre - half])


def warp_affine_reflect101(x, pts_src, pts_dst):
  """cv2.warpAffine(x, getAffineTransform(src, dst), INTER_LINEAR,
  BORDER_REFLECT_101) for one HWC float image.

  OpenCV maps every output pixel back with the inverse transform in fixed
  point (1/1024 px, rounded), then quantises the position to 1/32 px and
  interpolates bilinearly with float weights; we do the same.
  """
  h, w, _ = x.shape
  # Inverse map: output (dst) points -> input (src) points.
  a = jnp.concatenate([pts_dst, jnp.ones((3, 1), jnp.float32)], axis=1)
  m = jnp.linalg.solve(a, pts_src).T  # [2, 3]: src = m @ [dst_x, dst_y, 1]
  xs = jnp.arange(w, dtype=jnp.float32)
  ys = jnp.arange(h, dtype=jnp.float32)
  adelta = jnp.round(m[0, 0] * xs * 1024).astype(jnp.int32)
  bdelta = jnp.round(m[1, 0] * xs * 1024).astype(jnp.int32)
  x0 = jnp.round((m[0, 1] * ys + m[0, 2]) * 1024).astype(jnp.int32) + 16
  y0 = jnp.round((m[1, 1] * ys + m[1, 2]) * 1024).astype(jnp.int32) + 16
  big_x = (x0[:, None] + adelta[None, :]) >> 5
  big_y = (y0[:, None] + bdelta[None, :]) >> 5
  ix, fx = big_x >> 5, (big_x & 31).astype(jnp.float32) / 32
  iy, fy = big_y >> 5, (big_y & 31).astype(jnp.float32) / 32
  x0i, x1i = (filters.border_index(ix, w, 'reflect101'),
              filters.border_index(ix + 1, w, 'reflect101'))
  y0i, y1i = (filters.border_index(iy, h, 'reflect101'),
              filters.border_index(iy + 1, h, 'reflect101'))
  fx, fy = fx[..., None], fy[..., None]
  top = (1 - fx) * x[y0i, x0i] + fx * x[y0i, x1i]
  bot = (1 - fx) * x[y1i, x0i] + fx * x[y1i, x1i]
  return (1 - fy) * top + fy * bot


def map_coordinates_reflect(x, yy, xx):
  """scipy map_coordinates(order=1, mode='reflect') for an HWC image."""
  h, w, _ = x.shape
  y0 = jnp.floor(yy)
  x0 = jnp.floor(xx)
  fy = (yy - y0)[..., None]
  fx = (xx - x0)[..., None]
  y0 = y0.astype(jnp.int32)
  x0 = x0.astype(jnp.int32)
  ya, yb = (filters.border_index(y0, h, 'reflect'),
            filters.border_index(y0 + 1, h, 'reflect'))
  xa, xb = (filters.border_index(x0, w, 'reflect'),
            filters.border_index(x0 + 1, w, 'reflect'))
  top = (1 - fx) * x[ya, xa] + fx * x[ya, xb]
  bot = (1 - fx) * x[yb, xa] + fx * x[yb, xb]
  return (1 - fy) * top + fy * bot


def _prepare_elastic(table, h, w):
  f = table.fields('elastic_transform')
  return f, {'max_sigma': float(f['sigma'].max())}


def elastic_draws(seed, h, w):
  """(jitter [3, 2], dx [H, W], dy [H, W]), all U(-1, 1)."""
  return (rng.uniform(rng.substream(seed, 0), (3, 2), -1.0, 1.0),
          rng.uniform(rng.substream(seed, 1), (h, w), -1.0, 1.0),
          rng.uniform(rng.substream(seed, 2), (h, w), -1.0, 1.0))


def elastic_core(x, draws, p, static):
  """Elastic transform given the draws of `elastic_draws`."""
  h, w, _ = x.shape
  jitter, ux, uy = draws
  pts1 = jnp.asarray(affine_points(h, w))
  pts2 = pts1 + (jitter * p['jitter']).astype(jnp.float32)
  # The reference's points are (x, y) = (col, row): cv2 convention.
  # Stored once: fused into the resampling below, the warp's four taps
  # would be recomputed for each of its four reads (4x slower on a CPU).
  x = filters.unfused(lambda v: warp_affine_reflect101(v, pts1, pts2), x,
                      p['alpha'] > 0)
  # skimage gaussian(mode='reflect', truncate=3); at ImageNet-C severity 1
  # the kernel (sigma 170.8) is wider than the image: repeated reflection.
  fields = filters.gaussian_filter(jnp.stack([ux, uy], -1), p['sigma'],
                                   (0, 1), max_sigma=static['max_sigma'],
                                   mode='reflect', truncate=3.0)
  dx = p['alpha'] * fields[..., 0]
  dy = p['alpha'] * fields[..., 1]
  rows = jnp.arange(h, dtype=jnp.float32)[:, None] + dy
  cols = jnp.arange(w, dtype=jnp.float32)[None, :] + dx
  return map_coordinates_reflect(x, rows, cols)


@corruption('elastic_transform', family='digital', prepare=_prepare_elastic)
def elastic_transform(seed, x, p, static):
  """Elastic transform: a random affine warp (three points jittered by
  U(-j, j), OpenCV warpAffine with reflect-101 borders), then displacement
  fields U(-1, 1) smoothed by a Gaussian (sigma, truncate 3, reflect) times
  alpha, resampled bilinearly (scipy map_coordinates, reflect)."""
  h, w, _ = x.shape
  return elastic_core(x, elastic_draws(seed, h, w), p, static)
