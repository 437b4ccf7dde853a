"""Pillow's `Image.resize` as per-axis taps (python-pillow `Resample.c`).

Convolution filters (`precompute_coeffs`): for output ``o`` of an axis
resized from ``n`` to ``m`` pixels, ``scale = n / m``, the filter is
stretched by ``fs = max(scale, 1)`` (antialiasing on downscale), the window
is ``[trunc(c - R + 0.5), trunc(c + R + 0.5))`` around ``c = (o + 0.5) *
scale`` with ``R = support * fs``, clipped to the image, weights
``K((j - c + 0.5) / fs)`` normalised to sum 1 (so the border renormalises),
then rounded half away from zero to 22-bit fixed point. Both passes round
and clip to uint8. All of it is reproduced here in float64 with the same
operation order, so the weights equal Pillow's bit for bit.

Pass order: Pillow (13.x, measured) runs the height pass first when the
height shrinks by more than twice as many pixels as the width:
``oh < h and h - oh > 2 * (w - ow)``; otherwise the width pass first.

NEAREST goes through Pillow's affine scale: source position
``x0 = scale / 2``, accumulated ``x += scale`` per output, truncated.
"""

import functools
import math

import numpy as np

from robustmq_jax.systematic.recipe import Recipe
from robustmq_jax.systematic.recipe import Taps

PRECISION_BITS = 22
METHODS = ('nearest', 'bilinear', 'bicubic', 'box', 'hamming', 'lanczos')

_sin = np.frompyfunc(math.sin, 1, 1)  # libm, as Pillow's C code
_cos = np.frompyfunc(math.cos, 1, 1)


def _libm(f, x):
  return f(x).astype(np.float64)


def _box(x):
  return ((x > -0.5) & (x <= 0.5)).astype(np.float64)


def _bilinear(x):
  x = np.abs(x)
  return np.where(x < 1.0, 1.0 - x, 0.0)


def _hamming(x):
  x = np.abs(x)
  px = x * math.pi
  safe = np.where(x == 0.0, 1.0, px)
  # 0.54f / 0.46f are float literals in Pillow, promoted to double.
  v = _libm(_sin, safe) / safe * (float(np.float32(0.54)) +
                                  float(np.float32(0.46)) * _libm(_cos, safe))
  return np.where(x == 0.0, 1.0, np.where(x >= 1.0, 0.0, v))


def _bicubic(x):
  a = -0.5
  x = np.abs(x)
  near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
  far = (((x - 5) * x + 8) * x - 4) * a
  return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _sinc(x):
  px = x * math.pi
  safe = np.where(x == 0.0, 1.0, px)
  return np.where(x == 0.0, 1.0, _libm(_sin, safe) / safe)


def _lanczos(x):
  return np.where((x >= -3.0) & (x < 3.0), _sinc(x) * _sinc(x / 3), 0.0)


# name -> (filter, support)
FILTERS = {
    'box': (_box, 0.5),
    'bilinear': (_bilinear, 1.0),
    'hamming': (_hamming, 1.0),
    'bicubic': (_bicubic, 2.0),
    'lanczos': (_lanczos, 3.0),
}


def _round_away(v: np.ndarray) -> np.ndarray:
  """C's (int)(v + 0.5) / (int)(v - 0.5) by sign: half away from zero."""
  return np.trunc(np.where(v < 0, -0.5 + v, 0.5 + v))


@functools.lru_cache(maxsize=4096)
def filter_taps(n: int, m: int, name: str) -> Taps:
  """22-bit fixed-point taps of Pillow's filter `name` resizing n -> m."""
  filt, support = FILTERS[name]
  scale = float(np.float32(n)) / m  # Pillow's box is float: (in1 - in0) / m.
  fs = max(scale, 1.0)
  support = support * fs
  k = int(math.ceil(support)) * 2 + 1
  center = (np.arange(m) + 0.5) * scale
  xmin = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)
  xmax = np.minimum(np.trunc(center + support + 0.5), n).astype(np.int64)
  count = xmax - xmin
  j = np.arange(k)
  valid = j[None, :] < count[:, None]
  w = filt((j[None, :] + xmin[:, None] - center[:, None] + 0.5) * (1.0 / fs))
  w = np.where(valid, w, 0.0)
  ww = np.add.accumulate(w, axis=1)[:, -1]  # sequential, as the C loop
  w = np.where(ww[:, None] != 0.0, w / np.where(ww == 0.0, 1.0, ww)[:, None],
               w)
  fixed = _round_away(w * (1 << PRECISION_BITS)).astype(np.int32)
  index = np.minimum(xmin[:, None] + j[None, :], n - 1).astype(np.int32)
  index = np.where(valid, index, 0)
  fixed = np.where(valid, fixed, 0)
  used = max(1, int(count.max()))
  return Taps(index[:, :used], fixed[:, :used], n)


@functools.lru_cache(maxsize=4096)
def nearest_taps(n: int, m: int) -> Taps:
  """Pillow NEAREST: accumulated affine source positions, truncated."""
  step = float(np.float32(n)) / m
  pos = step * 0.5
  index = np.empty((m, 1), np.int32)
  for o in range(m):  # accumulation order matters for the last bit
    index[o, 0] = min(max(int(pos), 0), n - 1)
    pos += step
  return Taps(index, np.ones((m, 1), np.int32), n)


def vertical_first(h: int, w: int, oh: int, ow: int) -> bool:
  """Pillow's pass order for a resize (h, w) -> (oh, ow)."""
  return oh < h and (h - oh) > 2 * (w - ow)


def recipe(h: int, w: int, oh: int, ow: int, method: str) -> Recipe:
  """The Recipe of `Image.resize((ow, oh), method)` on an (h, w) image."""
  if method == 'nearest':
    return Recipe('select', x=nearest_taps(w, ow), y=nearest_taps(h, oh))
  if method not in FILTERS:
    raise ValueError(f'unknown PIL method {method!r}')
  return Recipe('fixed2', x=filter_taps(w, ow, method),
                y=filter_taps(h, oh, method),
                vertical_first=vertical_first(h, w, oh, ow))
