"""OpenCV's `cv2.resize` on uint8 as per-axis taps (opencv `resize.cpp`).

Per axis resized n -> m, OpenCV uses ``scale = 1 / (m / n)`` (double) and:

* INTER_NEAREST: ``src = min(floor(o * scale), n - 1)`` (corner aligned).
* INTER_LINEAR / CUBIC / LANCZOS4: ``f = float((o + 0.5) * scale - 0.5)``,
  ``s = floor(f)``, fraction ``f - s``; 2 / 4 / 8 taps at
  ``s - k/2 + 1 + j`` clamped to the image (replicated border), no
  antialiasing. Cubic uses Keys' kernel with a = -0.75; Lanczos4 the
  8-tap windowed sinc normalised to 1. Weights are computed in float32 and
  rounded to 11-bit fixed point (`INTER_RESIZE_COEF_BITS`); the bilinear
  width pass clamps its weight too at the borders.
* INTER_AREA, both axes shrinking: integer factors average blocks;
  otherwise exact pixel-overlap weights (float32). When any axis grows, it
  is a bilinear interpolation with area-style fractions
  (``s = floor(o * scale)``, ``f = (o + 1) - (s + 1) / scale``).
* INTER_LINEAR with both factors exactly 2 becomes the 2x2 block average.

Arithmetic measured against opencv-python 5.0 on x86-64 (and encoded in the
Recipe kind): bilinear = integer width pass + the vectorised height pass
(`linear_simd`), bit exact; Lanczos4 = integer passes, one final rounding
(`fixed1`), bit exact; bicubic on uint8 is computed in float (the wheel's
IPP path), emulated with float32 weights (`float2`), within one level;
area in float32 accumulated in OpenCV's tap order (`float_seq`), bit exact,
block averages with OpenCV's rounding (half up for 2x2).
"""

import functools
import math

import numpy as np

from robustmq_jax.systematic.recipe import Recipe
from robustmq_jax.systematic.recipe import Taps
from robustmq_jax.systematic.recipe import taps_from_rows

METHODS = ('nearest', 'linear', 'area', 'cubic', 'lanczos4')
COEF_SCALE = 1 << 11  # INTER_RESIZE_COEF_SCALE
_DBL_EPSILON = np.finfo(np.float64).eps
_F = np.float32
_S45 = 0.70710678118654752440084436210485
_CS = ((1, 0), (-_S45, -_S45), (0, 1), (_S45, -_S45), (-1, 0), (_S45, _S45),
       (0, -1), (-_S45, _S45))


def _scale(n: int, m: int) -> float:
  return 1.0 / (m / n)


def _fixed(c) -> np.ndarray:
  """saturate_cast<short>(c * INTER_RESIZE_COEF_SCALE) in float32."""
  v = np.rint(np.asarray(c, _F) * _F(COEF_SCALE))
  return np.clip(v, -32768, 32767).astype(np.int32)


_sin = np.frompyfunc(math.sin, 1, 1)  # libm, as OpenCV's std::sin
_cos = np.frompyfunc(math.cos, 1, 1)


def _cubic(x: np.ndarray) -> np.ndarray:
  """interpolateCubic in float32, [m] -> [m, 4]."""
  a, one = _F(-0.75), _F(1)
  x1 = x + one
  c0 = ((a * x1 - _F(5) * a) * x1 + _F(8) * a) * x1 - _F(4) * a
  c1 = ((a + _F(2)) * x - (a + _F(3))) * x * x + one
  y = one - x
  c2 = ((a + _F(2)) * y - (a + _F(3))) * y * y + one
  c3 = one - c0 - c1 - c2
  return np.stack([c0, c1, c2, c3], axis=1).astype(_F)


def _lanczos4(x: np.ndarray) -> np.ndarray:
  """interpolateLanczos4 in float32 (double trigonometry), [m] -> [m, 8]."""
  x3 = (x + _F(3)).astype(_F)  # float arithmetic, as in C: (x + 3) - i
  y0 = -x3.astype(np.float64) * math.pi * 0.25
  s0 = _sin(y0).astype(np.float64)
  c0 = _cos(y0).astype(np.float64)
  coeffs = []
  total = np.zeros_like(x)
  for i in range(8):
    d = (x3 - _F(i)).astype(_F)
    y = -d.astype(np.float64) * math.pi * 0.25
    y2 = np.where(y == 0, 1.0, y * y)
    c = ((_CS[i][0] * s0 + _CS[i][1] * c0) / y2).astype(_F)
    # x ~ 0 or 1: OpenCV's 1e30 trick selects the centre tap.
    c = np.where(np.abs(d) >= _F(1e-6), c, _F(1e30)).astype(_F)
    coeffs.append(c)
    total = (total + c).astype(_F)
  inv = (_F(1) / total).astype(_F)
  return np.stack([(c * inv).astype(_F) for c in coeffs], axis=1)


def _positions(n: int, m: int, area_mode: bool):
  """(s, f) per output as OpenCV computes them (f float32)."""
  scale = _scale(n, m)
  o = np.arange(m, dtype=np.float64)
  if area_mode:
    s = np.floor(o * scale)
    f = ((o + 1) - (s + 1) * (m / n)).astype(_F)
    f = np.where(f <= 0, _F(0), (f - np.floor(f)).astype(_F)).astype(_F)
  else:
    f = ((o + 0.5) * scale - 0.5).astype(_F)
    s = np.floor(f)
    f = (f - s.astype(_F)).astype(_F)
  return s.astype(np.int64), f


@functools.lru_cache(maxsize=4096)
def interp_taps(n: int, m: int, method: str, *, area_mode: bool = False,
                width_pass: bool = True, fixed: bool = True) -> Taps:
  """Taps of INTER_LINEAR ('linear'), INTER_CUBIC or INTER_LANCZOS4.

  Args:
    n: source length.
    m: destination length.
    method: 'linear', 'cubic' or 'lanczos4'.
    area_mode: INTER_AREA's bilinear variant (some axis enlarges).
    width_pass: the bilinear width pass also zeroes the fraction where the
      window leaves the image; the height pass only clamps rows.
    fixed: 11-bit integer weights, else float32.

  Returns:
    Taps with 2, 4 or 8 taps.
  """
  k = {'linear': 2, 'cubic': 4, 'lanczos4': 8}[method]
  s, f = _positions(n, m, area_mode)
  if method == 'linear' and width_pass:
    low, high = s < 0, s >= n - 1
    f = np.where(low | high, _F(0), f).astype(_F)
    s = np.where(low, 0, np.where(high, n - 1, s))
  if method == 'cubic':
    c = _cubic(f)
  elif method == 'lanczos4':
    c = _lanczos4(f)
  else:
    c = np.stack([(_F(1) - f).astype(_F), f], axis=1)
  index = np.clip(s[:, None] - k // 2 + 1 + np.arange(k)[None, :], 0, n - 1)
  weight = _fixed(c) if fixed else c.astype(_F)
  return Taps(index.astype(np.int32), weight, n)


@functools.lru_cache(maxsize=4096)
def nearest_taps(n: int, m: int) -> Taps:
  index = np.minimum(np.floor(np.arange(m) * _scale(n, m)), n - 1)
  return Taps(index.astype(np.int32)[:, None], np.ones((m, 1), np.int32), n)


@functools.lru_cache(maxsize=4096)
def area_taps(n: int, m: int) -> Taps:
  """Pixel-overlap weights (`computeResizeAreaTab`), float32, n >= m."""
  scale = _scale(n, m)
  rows = []
  for o in range(m):
    fsx1 = o * scale
    fsx2 = fsx1 + scale
    cell = min(scale, n - fsx1)
    sx1, sx2 = math.ceil(fsx1), math.floor(fsx2)
    sx2 = min(sx2, n - 1)
    sx1 = min(sx1, sx2)
    r = []
    if sx1 - fsx1 > 1e-3:
      r.append((sx1 - 1, _F((sx1 - fsx1) / cell)))
    r.extend((s, _F(1.0 / cell)) for s in range(sx1, sx2))
    if fsx2 - sx2 > 1e-3:
      r.append((sx2, _F(min(min(fsx2 - sx2, 1.), cell) / cell)))
    rows.append(r)
  return taps_from_rows(rows, n, _F)


@functools.lru_cache(maxsize=4096)
def block_taps(n: int, factor: int) -> Taps:
  """Sums of `factor` consecutive pixels (weights 1.0)."""
  m = n // factor
  index = (np.arange(m)[:, None] * factor + np.arange(factor)[None, :])
  return Taps(index.astype(np.int32), np.ones((m, factor), _F), n)


def _integer_factor(n: int, m: int) -> int:
  """OpenCV's iscale when `is_area_fast` holds for this axis, else 0."""
  scale = _scale(n, m)
  i = int(round(scale))
  return i if abs(scale - i) < _DBL_EPSILON else 0


def _area(h, w, oh, ow) -> Recipe:
  fy, fx = _integer_factor(h, oh), _integer_factor(w, ow)
  if fy and fx:  # is_area_fast: block sums, one rounding.
    return Recipe('float_seq', x=block_taps(w, fx), y=block_taps(h, fy),
                  post_scale=float(_F(1.0) / _F(fx * fy)),
                  half_up=(fx, fy) == (2, 2))
  return Recipe('float_seq', x=area_taps(w, ow), y=area_taps(h, oh))


def recipe(h: int, w: int, oh: int, ow: int, method: str) -> Recipe:
  """The Recipe of `cv2.resize(img, (ow, oh), interpolation=method)`."""
  if method == 'nearest':
    return Recipe('select', x=nearest_taps(w, ow), y=nearest_taps(h, oh))
  shrink = _scale(w, ow) >= 1 and _scale(h, oh) >= 1
  if method == 'area' and shrink:
    return _area(h, w, oh, ow)
  if method == 'linear':
    if (_integer_factor(h, oh), _integer_factor(w, ow)) == (2, 2):
      return _area(h, w, oh, ow)
  if method in ('linear', 'area'):
    area_mode = method == 'area'
    return Recipe('linear_simd',
                  x=interp_taps(w, ow, 'linear', area_mode=area_mode),
                  y=interp_taps(h, oh, 'linear', area_mode=area_mode,
                                width_pass=False))
  if method == 'cubic':
    return Recipe('float2', x=interp_taps(w, ow, 'cubic', fixed=False),
                  y=interp_taps(h, oh, 'cubic', fixed=False))
  if method == 'lanczos4':
    return Recipe('fixed1', x=interp_taps(w, ow, 'lanczos4'),
                  y=interp_taps(h, oh, 'lanczos4'))
  raise ValueError(f'unknown OpenCV method {method!r}')
