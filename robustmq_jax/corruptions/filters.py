"""Filters shared by the corruptions, with the reference libraries' borders.

All functions work on one image or a batch; shapes are static and the
parameters that change with the severity (sigma, kernels, zoom factors,
angles) may be traced. Border modes are named after their reference:

* 'nearest' (scipy/skimage): aaa|abcd|ddd (skimage `gaussian` default).
* 'reflect' (scipy): cba|abcd|dcb (skimage `gaussian(mode='reflect')`).
* 'reflect101' (OpenCV default): dcb|abcd|cba (`filter2D`, `blur`).

Convolutions are written as sums of shifted slices or as FFTs, never with
`lax.conv`: XLA's CPU depthwise convolution is 50-100x slower here.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

_PAD_MODES = {'nearest': 'edge', 'reflect': 'symmetric',
              'reflect101': 'reflect', 'zero': 'constant'}


def gaussian_radius(sigma: float, truncate: float = 4.0) -> int:
  """scipy's kernel radius: int(truncate * sigma + 0.5)."""
  return int(truncate * float(sigma) + 0.5)


def gaussian_weights(sigma: jax.Array, max_radius: int,
                     truncate: float = 4.0) -> jax.Array:
  """scipy.ndimage's 1D Gaussian for a possibly traced sigma, [2R+1].

  Taps beyond scipy's radius int(truncate * sigma + 0.5) are zero, so the
  result equals scipy's kernel zero-padded to `max_radius`. sigma <= 1e-15 is
  the identity (scipy skips such axes).
  """
  sigma = jnp.asarray(sigma, jnp.float32)
  x = jnp.arange(-max_radius, max_radius + 1, dtype=jnp.float32)
  radius = jnp.floor(truncate * sigma + 0.5)
  s = jnp.maximum(sigma, 1e-6)
  w = jnp.where(jnp.abs(x) <= radius, jnp.exp(-0.5 * (x / s) ** 2), 0.0)
  w = w / jnp.sum(w)
  delta = (x == 0).astype(jnp.float32)
  return jnp.where(sigma > 1e-15, w, delta)


def pad_axis(x: jax.Array, axis: int, before: int, after: int,
             mode: str) -> jax.Array:
  pads = [(0, 0)] * x.ndim
  pads[axis] = (before, after)
  return jnp.pad(x, pads, mode=_PAD_MODES[mode])


def correlate1d(x: jax.Array, weights: jax.Array, axis: int,
                mode: str = 'nearest') -> jax.Array:
  """Correlation with a centred odd-length kernel along `axis`.

  The taps are a static unrolled sum of shifted slices (XLA fuses them into
  one loop); zero weights cost a multiply-add but keep one compile for all
  severities.
  """
  k = weights.shape[-1]
  r = k // 2
  n = x.shape[axis]
  if r == 0:
    return x * weights[0]
  p = pad_axis(x, axis, r, r, mode)
  out = None
  for i in range(k):
    term = weights[i] * jax.lax.slice_in_dim(p, i, i + n, axis=axis)
    out = term if out is None else out + term
  return out


def border_index(i: jax.Array, n: int, mode: str) -> jax.Array:
  """Maps (possibly far) out-of-range indices into [0, n) for a border mode."""
  if mode == 'nearest':
    return jnp.clip(i, 0, n - 1)
  if mode == 'reflect':
    i = jnp.mod(i, 2 * n)
    return jnp.where(i >= n, 2 * n - 1 - i, i)
  if mode == 'reflect101':
    if n == 1:
      return jnp.zeros_like(i)
    period = 2 * (n - 1)
    i = jnp.mod(i, period)
    return jnp.where(i >= n, period - i, i)
  raise ValueError(f'unknown border mode {mode!r}')


def filter_matrix(n: int, weights: jax.Array, mode: str) -> jax.Array:
  """[n, n] matrix of a centred 1D correlation with the given border.

  Row i holds weight k at column border_index(i + k - R); taps falling on
  the same column add up. Works for kernels longer than the axis.
  """
  r = weights.shape[-1] // 2
  cols = border_index(
      jnp.arange(n)[:, None] + jnp.arange(-r, r + 1)[None, :], n, mode)
  rows = jnp.broadcast_to(jnp.arange(n)[:, None], cols.shape)
  return jnp.zeros((n, n), jnp.float32).at[rows, cols].add(
      jnp.broadcast_to(weights.astype(jnp.float32), cols.shape))


def apply_matrix(x: jax.Array, m: jax.Array, axis: int) -> jax.Array:
  """y = m @ x along `axis` (float32 accumulation on every backend)."""
  axis = axis % x.ndim
  hi = jax.lax.Precision.HIGHEST
  if axis == x.ndim - 1:  # x @ m.T: no transpose of x
    return jnp.matmul(x, m.T, precision=hi)
  if axis == x.ndim - 2:
    return jnp.matmul(m, x, precision=hi)
  y = jnp.tensordot(m, x, axes=([1], [axis]), precision=hi)
  return jnp.moveaxis(y, 0, axis)


def gaussian_filter(x: jax.Array, sigma: jax.Array, axes, *,
                    max_sigma: float, mode: str = 'nearest',
                    truncate: float = 4.0) -> jax.Array:
  """scipy.ndimage.gaussian_filter over `axes` with a traced sigma.

  Each axis is one matrix product with the filter's [n, n] matrix (borders
  folded in): on CPUs XLA's GEMM beats both its convolutions and unrolled
  taps, and the cost does not grow with sigma. The filtered axes are moved
  last first (e.g. HWC -> CHW), so that both products are plain GEMMs
  without transposes in between (1.5x faster on a CPU).
  """
  r = gaussian_radius(max_sigma, truncate)
  w = gaussian_weights(sigma, r, truncate)
  axes = tuple(a % x.ndim for a in axes)
  rest = [a for a in range(x.ndim) if a not in axes]
  y = jnp.transpose(x, rest + list(axes))
  mats = {}
  for i in range(len(axes)):
    n = y.shape[len(rest) + i]
    if n not in mats:
      mats[n] = filter_matrix(n, w, mode)
    y = apply_matrix(y, mats[n], len(rest) + i)
  return jnp.transpose(y, np.argsort(rest + list(axes)))


def correlate2d_small(x: jax.Array, kernel, axes=(-3, -2),
                      mode: str = 'reflect101') -> jax.Array:
  """2D correlation with a small static kernel (numpy), e.g. 3x3."""
  kernel = np.asarray(kernel)
  kh, kw = kernel.shape
  ah, aw = (a % x.ndim for a in axes)
  h, w = x.shape[ah], x.shape[aw]
  p = pad_axis(x, ah, kh // 2, kh // 2, mode)
  p = pad_axis(p, aw, kw // 2, kw // 2, mode)
  out = None
  for i in range(kh):
    for j in range(kw):
      if kernel[i, j] == 0:
        continue
      sl = jax.lax.slice_in_dim(p, i, i + h, axis=ah)
      sl = jax.lax.slice_in_dim(sl, j, j + w, axis=aw)
      term = kernel[i, j] * sl
      out = term if out is None else out + term
  return jnp.zeros_like(x) if out is None else out


def fft_correlate2d(x: jax.Array, kernel: jax.Array,
                    mode: str = 'reflect101') -> jax.Array:
  """2D correlation of HWC (or NHWC) images with one odd square kernel.

  The image is padded by the kernel radius with the given border, then
  multiplied in the Fourier domain (OpenCV's `filter2D` does the same for
  kernels of 11x11 and more). `kernel` may be traced; its static size sets
  the padding.
  """
  k = kernel.shape[0]
  r = k // 2
  h, w = x.shape[-3], x.shape[-2]
  n_h = _fft_size(h + 2 * r)
  n_w = _fft_size(w + 2 * r)
  # Correlation = convolution with the flipped kernel, centred at 0.
  kf = jnp.zeros((n_h, n_w), jnp.float32)
  kf = kf.at[:k, :k].set(kernel[::-1, ::-1].astype(jnp.float32))
  kf = jnp.roll(kf, (-r, -r), axis=(0, 1))
  fk = jnp.fft.rfft2(kf)
  # Channels first, then pad: in the opposite order XLA's CPU FFT receives a
  # transposed layout under sharding and fails a layout check.
  xc = jnp.moveaxis(x, -1, -3)
  p = pad_axis(pad_axis(xc, -2, r, r, mode), -1, r, r, mode)
  out = jnp.fft.irfft2(jnp.fft.rfft2(p, s=(n_h, n_w)) * fk, s=(n_h, n_w))
  return jnp.moveaxis(out[..., r:r + h, r:r + w], -3, -1)


def _fft_size(n: int) -> int:
  """Smallest 2^a 3^b 5^c >= n (fast sizes for pocketfft / cuFFT)."""
  best = 1 << (n - 1).bit_length()
  p3 = 1
  while p3 < 2 * n:
    p35 = p3
    while p35 < 2 * n:
      m = p35
      while m < n:
        m *= 2
      best = min(best, m)
      p35 *= 5
    p3 *= 3
  return best


def motion_blur(x: jax.Array, radius: jax.Array, sigma: jax.Array,
                angle: jax.Array, *, max_radius: int) -> jax.Array:
  """The NumPy motion blur of `imagecorruptions` for one HWC or HW image.

  Kernel: width = 2 * radius + 1 taps, weights exp(-i^2 / (2 sigma^2)),
  i = 0..width-1, normalised (a one-sided Gaussian trail). Tap i shifts the
  image by (-ceil(i sin(angle) - 0.5), -ceil(i cos(angle) - 0.5)) pixels with
  edge replication; taps stop once a shift leaves the image. `radius`,
  `sigma` and `angle` (degrees) may be traced; `max_radius` is static.
  """
  h, w = x.shape[0], x.shape[1]
  n = 2 * max_radius + 1
  width = 2 * jnp.asarray(radius, jnp.float32) + 1
  i = jnp.arange(n, dtype=jnp.float32)
  s = jnp.asarray(sigma, jnp.float32)
  g = jnp.exp(-i**2 / (2 * s * s)) / (np.sqrt(2 * np.pi) * s)
  g = jnp.where(i < width, g, 0.0)
  g = g / jnp.sum(g)
  theta = jnp.deg2rad(jnp.asarray(angle, jnp.float32))
  # point / hypot in the reference is (sin, cos) up to rounding.
  dy = -jnp.ceil(i * jnp.sin(theta) - 0.5).astype(jnp.int32)
  dx = -jnp.ceil(i * jnp.cos(theta) - 0.5).astype(jnp.int32)
  inside = (jnp.abs(dy) < h) & (jnp.abs(dx) < w)
  inside = jnp.cumprod(inside.astype(jnp.int32)).astype(bool)
  g = jnp.where(inside, g, 0.0)
  dy = jnp.where(inside, dy, 0)
  dx = jnp.where(inside, dx, 0)
  pad = min(n - 1, max(h, w) - 1)
  pads = [(pad, pad), (pad, pad)] + [(0, 0)] * (x.ndim - 2)
  p = jnp.pad(x, pads, mode='edge')
  zeros = (0,) * (x.ndim - 2)

  # A loop over groups of taps: small programs compile in a fraction of
  # the time, and only the severity's taps run; a group is one fused pass
  # over the image (one accumulator read and write per group, not per tap).
  group = 8
  g = jnp.pad(g, (0, group))
  dy = jnp.pad(dy, (0, group))
  dx = jnp.pad(dx, (0, group))

  def taps_of_group(i, acc):
    for j in range(group):
      t = i * group + j
      start = (pad - jnp.clip(dy[t], -pad, pad),
               pad - jnp.clip(dx[t], -pad, pad)) + zeros
      acc = acc + g[t] * jax.lax.dynamic_slice(p, start, x.shape)
    return acc

  taps = jnp.minimum(width, n).astype(jnp.int32)
  return jax.lax.fori_loop(0, (taps + group - 1) // group, taps_of_group,
                           jnp.zeros_like(x))


def zoom_geometry(side: int, factors) -> np.ndarray:
  """Host-side geometry of hendrycks' `clipped_zoom` for each factor.

  clipped_zoom crops the centre ch = ceil(side / z) pixels (top = (side -
  ch) // 2), zooms them with scipy `zoom(order=1)` to out = round(ch * z)
  pixels (corner-aligned: output j samples input j * (ch - 1) / (out - 1))
  and keeps `side` pixels from trim = (out - side) // 2. Computed in float64
  as the reference does, so the integer sizes match exactly.

  Returns:
    float64 [len(factors), 4]: (top, ch, scale, trim) per factor.
  """
  rows = []
  for z in np.atleast_1d(np.asarray(factors, np.float64)):
    ch = int(np.ceil(side / z))
    top = (side - ch) // 2
    out = int(round(ch * z))
    trim = (out - side) // 2
    scale = (ch - 1) / (out - 1) if out > 1 else 0.0
    rows.append((top, ch, scale, trim))
  return np.asarray(rows, np.float64)


def zoom_coords(side: int, geometry: jax.Array):
  """Neighbour indices and weights of one zoom along an axis of `side`.

  Args:
    side: the axis length.
    geometry: (top, ch, scale, trim) from `zoom_geometry` (may be traced).

  Returns:
    (i0, i1, frac): int32 [side] indices into the uncropped axis and float32
    [side] weights of i1.
  """
  g = jnp.asarray(geometry, jnp.float32)
  top, ch, scale, trim = g[0], g[1], g[2], g[3]
  c = (jnp.arange(side, dtype=jnp.float32) + trim) * scale
  c0 = jnp.clip(jnp.floor(c), 0, ch - 1)
  frac = c - c0
  i0 = (top + c0).astype(jnp.int32)
  i1 = (top + jnp.minimum(c0 + 1, ch - 1)).astype(jnp.int32)
  return i0, i1, frac


def clipped_zoom(x: jax.Array, geometry: jax.Array) -> jax.Array:
  """hendrycks' `clipped_zoom` of one square HW or HWC image.

  Args:
    x: the image.
    geometry: one row of `zoom_geometry(side, factors)` (may be traced).
  """
  h, w = x.shape[0], x.shape[1]
  r0, r1, rf = zoom_coords(h, geometry)
  c0, c1, cf = zoom_coords(w, geometry)
  extra = (1,) * (x.ndim - 2)
  rf = rf.reshape((h, 1) + extra)
  cf = cf.reshape((1, w) + extra)
  rows = (1 - rf) * x[r0] + rf * x[r1]
  return (1 - cf) * rows[:, c0] + cf * rows[:, c1]


def unfused(fn, x: jax.Array, anchor: jax.Array) -> jax.Array:
  """fn(x), computed and stored as its own XLA computation.

  XLA fuses a cheap producer into every consumer that reads it; when a
  consumer reads each value several times (shifted slices, the taps of a
  resampling) the producer is recomputed as often. A conditional is a
  fusion boundary; both of its branches are `fn`, so the result never
  depends on `anchor`, which only has to be a traced scalar bool that the
  compiler cannot fold (e.g. derived from a severity parameter) and that is
  not batched (under `vmap` a batched one turns the conditional into a
  select of two evaluations). If it is folded, `fn` is simply fused again.
  """
  return jax.lax.cond(anchor, fn, fn, x)


def pow2_at_least(n: int) -> int:
  return 1 << max(0, math.ceil(math.log2(n)))
