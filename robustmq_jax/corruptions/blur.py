"""Blur corruptions: defocus, glass, motion, zoom and Gaussian blur.

Severity is traced in all five (one compile per image shape and table):

* defocus_blur: the disk kernels are built on the host (NumPy + OpenCV's
  `GaussianBlur`, as the reference) and zero-padded to the largest size.
* glass_blur: the pixel shuffle loops over a traced number of wavefront
  steps (below); the Gaussian taps are padded to the largest sigma.
* motion_blur, zoom_blur: taps / zoom factors padded to the largest
  severity, with zero weights.
"""

import functools

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from robustmq_jax.corruptions import filters
from robustmq_jax.corruptions import rng
from robustmq_jax.corruptions.base import corruption


def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
  """The reference's anti-aliased disk (float32, 17x17 or (2r+1)^2)."""
  import cv2  # pylint: disable=g-import-not-at-top
  if radius <= 8:
    grid = np.arange(-8, 8 + 1)
    ksize = (3, 3)
  else:
    grid = np.arange(-radius, radius + 1)
    ksize = (5, 5)
  xx, yy = np.meshgrid(grid, grid)
  disk = np.array((xx**2 + yy**2) <= radius**2, dtype=np.float32)
  disk /= np.sum(disk)
  return cv2.GaussianBlur(disk, ksize=ksize, sigmaX=alias_blur)


def _prepare_defocus(table, h, w):
  del h, w
  f = table.fields('defocus_blur')
  kernels = [disk_kernel(r, a) for r, a in zip(f['radius'], f['alias_sigma'])]
  k = max(x.shape[0] for x in kernels)
  padded = np.zeros((5, k, k), np.float32)
  for i, x in enumerate(kernels):
    o = (k - x.shape[0]) // 2
    padded[i, o:o + x.shape[0], o:o + x.shape[0]] = x
  return {'kernel': padded}, {}


@corruption('defocus_blur', family='blur', random=False,
            prepare=_prepare_defocus, cpu_chunk=2)
def defocus_blur(seed, x, p, static):
  """Defocus: correlation with an anti-aliased disk (OpenCV `filter2D`,
  border reflect-101), computed by FFT."""
  del seed, static
  return filters.fft_correlate2d(x, p['kernel'], 'reflect101')


def _prepare_gaussian(name):
  def prepare(table, h, w):
    del h, w
    f = table.fields(name)
    return f, {'max_sigma': float(np.max(f['sigma']))}
  return prepare


@corruption('gaussian_blur', family='blur', random=False,
            prepare=_prepare_gaussian('gaussian_blur'))
def gaussian_blur(seed, x, p, static):
  """Gaussian blur per channel (skimage `gaussian`: border 'nearest',
  truncate 4)."""
  del seed
  return filters.gaussian_filter(x, p['sigma'], (0, 1),
                                 max_sigma=static['max_sigma'])


# ---------------------------------------------------------------------------
# Glass blur.
#
# The reference visits pixels (h, w) for h, w from side - delta down to
# delta + 1 and does `x[h, w], x[h', w'] = x[h', w'], x[h, w]` with (dx, dy)
# drawn from randint(-delta, delta) (so in [-delta, delta - 1]). On an HWC
# NumPy array the right-hand side holds views, so this is a copy
# x[h, w] <- x[h + dy, w + dx], not a swap; we reproduce the copy.
#
# The copies are sequential, but copy (a, b) (a = row counter, b = column
# counter, both from 0) only touches rows and columns within 2 * delta - 1
# of its own. Scheduling copy (a, b) at step t = 2 * delta * a + b keeps the
# order of every pair that can interact, and copies sharing a step are
# independent. So each step is one vectorised gather/scatter and the result
# is exactly the sequential one, in 2 * delta * rows + cols steps instead of
# rows * cols.


def _prepare_glass(table, h, w):
  f = table.fields('glass_blur')
  delta_min = int(f['delta'].min())
  cols = w - 2 * delta_min
  return f, {
      'max_sigma': float(f['sigma'].max()),
      'max_delta': int(f['delta'].max()),
      'max_iterations': int(f['iterations'].max()),
      # Copies per wavefront step (the most at the smallest delta).
      'width': (cols - 1) // (2 * delta_min) + 1,
  }


def glass_offsets(seed, h, w, iterations: int, delta):
  """int32 [iterations, h, w, 2]: (dx, dy) of copy (a, b) in [-delta, delta).

  Index [i, a, b] is the copy at row h - delta - a, column w - delta - b of
  pass i (only a < h - 2 delta, b < w - 2 delta are used).
  """
  return rng.randint(seed, (iterations, h, w, 2), -delta, delta)


def glass_shuffle(x, offsets, delta, iterations):
  """The reference's sequential local copies, given the offsets.

  Args:
    x: HWC image.
    offsets: int32 [max_iterations, H, W, 2] (dx, dy), see `glass_offsets`.
    delta: int32 scalar (may be traced).
    iterations: int32 scalar <= max_iterations (may be traced).

  Returns:
    The shuffled image.
  """
  h, w, c = x.shape
  delta = jnp.asarray(delta, jnp.int32)
  rows = h - 2 * delta
  cols = w - 2 * delta
  step = 2 * delta
  steps = step * (rows - 1) + cols
  # Static vector width: enough for the smallest delta this size allows.
  width = (w - 2 - 1) // 2 + 1
  flat = jnp.concatenate([x.reshape(h * w, c), jnp.zeros((1, c), x.dtype)])
  dummy = h * w
  k = jnp.arange(width, dtype=jnp.int32)

  def one_step(it, t, img):
    a = jnp.minimum(t // step, rows - 1) - k
    b = t - step * a
    valid = (a >= 0) & (b < cols)
    a = jnp.clip(a, 0, h - 1)
    b = jnp.clip(b, 0, w - 1)
    off = offsets[it, a, b]
    hh = h - delta - a
    ww = w - delta - b
    src = (hh + off[:, 1]) * w + (ww + off[:, 0])
    dst = hh * w + ww
    src = jnp.where(valid, src, dummy)
    dst = jnp.where(valid, dst, dummy)
    return img.at[dst].set(img[src], unique_indices=False)

  def one_pass(it, img):
    return lax.fori_loop(0, steps, functools.partial(one_step, it), img)

  flat = lax.fori_loop(0, iterations, one_pass, flat)
  return flat[:h * w].reshape(h, w, c)


def glass_core(x, offsets, p, static):
  """Glass blur given the offsets: blur, uint8 truncation, shuffle, blur."""
  blur = functools.partial(filters.gaussian_filter, sigma=p['sigma'],
                           axes=(0, 1), max_sigma=static['max_sigma'])
  x = jnp.floor(blur(x) * 255.0) / 255.0
  x = glass_shuffle(x, offsets, p['delta'].astype(jnp.int32),
                    p['iterations'].astype(jnp.int32))
  return blur(x)


@corruption('glass_blur', family='blur', prepare=_prepare_glass)
def glass_blur(seed, x, p, static):
  """Glass: Gaussian blur, uint8 truncation, `iterations` passes of local
  pixel copies from random offsets in [-delta, delta), Gaussian blur again."""
  h, w, _ = x.shape
  offsets = glass_offsets(seed, h, w, static['max_iterations'],
                          p['delta'].astype(jnp.int32))
  return glass_core(x, offsets, p, static)


def _prepare_motion(table, h, w):
  del h, w
  f = table.fields('motion_blur')
  return f, {'max_radius': int(f['radius'].max())}


def motion_core(x, angle, p, static):
  return filters.motion_blur(x, p['radius'], p['sigma'], angle,
                             max_radius=static['max_radius'])


@corruption('motion_blur', family='blur', prepare=_prepare_motion,
            cpu_chunk=2)
def motion_blur(seed, x, p, static):
  """Motion blur along an angle drawn from U(-45, 45) degrees.

  The NumPy kernel of `imagecorruptions` (a one-sided Gaussian trail of
  2 * radius + 1 taps), standing in for ImageMagick's MotionBlurImage that
  hendrycks/robustness called through Wand; no PNG round trip.
  """
  angle = rng.uniform(seed, (), -45.0, 45.0)
  return motion_core(x, angle, p, static)


def _prepare_zoom(table, h, w):
  factors = table.zoom_factors()
  n = max(len(f) for f in factors)
  geo = np.zeros((5, n, 2, 4), np.float32)
  geo[..., 1] = 1  # Unused slots: a valid 1-pixel crop, weight 0.
  for s, fs in enumerate(factors):
    geo[s, :len(fs), 0] = filters.zoom_geometry(h, fs)
    geo[s, :len(fs), 1] = filters.zoom_geometry(w, fs)
  counts = np.asarray([len(f) for f in factors], np.float32)
  return {'geometry': geo, 'count': counts}, {'max_count': n}


def zoom_layers(x, geometry_hw):
  """hendrycks' clipped_zoom with per-axis geometry [2, 4]."""
  h, w = x.shape[0], x.shape[1]
  r0, r1, rf = filters.zoom_coords(h, geometry_hw[0])
  c0, c1, cf = filters.zoom_coords(w, geometry_hw[1])
  extra = (1,) * (x.ndim - 2)
  rf = rf.reshape((h, 1) + extra)
  cf = cf.reshape((1, w) + extra)
  rows = (1 - rf) * x[r0] + rf * x[r1]
  return (1 - cf) * rows[:, c0] + cf * rows[:, c1]


@corruption('zoom_blur', family='blur', random=False, prepare=_prepare_zoom)
def zoom_blur(seed, x, p, static):
  """Zoom blur: mean of the image and its centre zooms by each factor of
  `np.arange(1, stop, step)` (z = 1 included, so the image counts twice)."""
  del seed

  def add(i, acc):
    return acc + zoom_layers(x, p['geometry'][i])

  acc = jax.lax.fori_loop(0, p['count'].astype(jnp.int32), add, x)
  return acc / (p['count'] + 1.0)
