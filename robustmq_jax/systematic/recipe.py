"""Host-side description of one separable resize: per-axis taps + arithmetic.

Every resize method of PIL and OpenCV used here is separable: an output pixel
is a weighted sum over source rows of weighted sums over source columns, with
the library's own fixed-point or float rounding between and after the two
passes. A `Taps` holds one axis (for output position ``o``:
``sum_k weight[o, k] * in[index[o, k]]``); a `Recipe` pairs the width and
height taps with the arithmetic (`kind`) that reproduces the library's
rounding. Recipes are built in numpy (float64 where the library uses double),
once per (input size, output size, method), and turned into dense matrices
for the device (`Taps.dense`).

Kinds (the arithmetic of `robustmq_jax.systematic.resample`):

* ``select``: nearest neighbour; one tap of weight 1 per axis.
* ``fixed2``: PIL's 8-bit convolution: integer weights in units of 2**-22,
  each pass rounded (+2**21, >> 22) and clipped to uint8; the width pass runs
  first unless `vertical_first`.
* ``fixed1``: OpenCV's fixed point (weights in units of 2**-11): integer
  width pass, integer height pass, one rounding (+2**21, >> 22) at the end.
* ``linear_simd``: OpenCV's 8-bit bilinear: integer width pass (units 2**-11),
  then the vectorised height pass of two taps,
  ``((((s0 >> 4) * b0) >> 16) + (((s1 >> 4) * b1) >> 16) + 2) >> 2``.
* ``float2``: float32 width pass, float32 height pass (contractions),
  rounded half to even, clipped.
* ``float_seq``: as ``float2`` but each pass accumulates its taps one by one
  in tap order (float32 sums depend on the order), then times `post_scale`,
  rounded half to even (or half up when `half_up`), clipped.
"""

import dataclasses

import numpy as np

KINDS = ('select', 'fixed2', 'fixed1', 'linear_simd', 'float2', 'float_seq')


@dataclasses.dataclass(frozen=True)
class Taps:
  """Resampling weights of one axis.

  Attributes:
    index: int32 [out, K] source positions (already clamped to the image).
    weight: [out, K] weights, int32 (fixed point) or float32; padding taps
      have weight 0.
    size_in: source length along this axis.
  """
  index: np.ndarray
  weight: np.ndarray
  size_in: int

  @property
  def size_out(self) -> int:
    return self.index.shape[0]

  @property
  def num_taps(self) -> int:
    return self.index.shape[1]

  def dense(self, size_in: int | None = None) -> np.ndarray:
    """[out, size_in] matrix (duplicate indices add up)."""
    n = self.size_in if size_in is None else size_in
    m = np.zeros((self.size_out, n), self.weight.dtype)
    rows = np.broadcast_to(np.arange(self.size_out)[:, None], self.index.shape)
    np.add.at(m, (rows, self.index), self.weight)
    return m

  def crop(self, start: int, length: int) -> 'Taps':
    """Keeps output positions start..start+length-1."""
    if start < 0 or start + length > self.size_out:
      raise ValueError(f'crop {start}+{length} outside {self.size_out} outputs')
    return Taps(self.index[start:start + length],
                self.weight[start:start + length], self.size_in)

  def with_taps(self, k: int) -> 'Taps':
    """Pads (with weight-0 taps at index 0) to exactly k taps."""
    extra = k - self.num_taps
    if extra < 0:
      raise ValueError(f'cannot shrink {self.num_taps} taps to {k}')
    if not extra:
      return self
    pad = ((0, 0), (0, extra))
    return Taps(np.pad(self.index, pad), np.pad(self.weight, pad),
                self.size_in)


def taps_from_rows(rows, size_in: int, dtype) -> Taps:
  """Builds Taps from per-output lists of (index, weight) pairs."""
  k = max(1, max(len(r) for r in rows))
  index = np.zeros((len(rows), k), np.int32)
  weight = np.zeros((len(rows), k), dtype)
  for o, r in enumerate(rows):
    for j, (i, w) in enumerate(r):
      index[o, j] = i
      weight[o, j] = w
  return Taps(index, weight, size_in)


@dataclasses.dataclass(frozen=True)
class Recipe:
  """A whole 2-D resize: width taps, height taps and the arithmetic.

  Attributes:
    kind: one of `KINDS`.
    x: taps along the width (output width = x.size_out).
    y: taps along the height.
    vertical_first: ``fixed2`` only: run the height pass first (Pillow does
      when the height shrinks by more than twice as many pixels as the width).
    post_scale: ``float_seq`` only: factor applied before rounding.
    half_up: ``float_seq`` only: round half up instead of half to even.
  """
  kind: str
  x: Taps
  y: Taps
  vertical_first: bool = False
  post_scale: float = 1.0
  half_up: bool = False

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f'unknown recipe kind {self.kind!r}')

  @property
  def in_size(self) -> tuple[int, int]:
    return self.y.size_in, self.x.size_in

  @property
  def out_size(self) -> tuple[int, int]:
    return self.y.size_out, self.x.size_out

  def crop(self, top: int, left: int, height: int, width: int) -> 'Recipe':
    """The recipe of a crop of the output (outputs are independent)."""
    return dataclasses.replace(self, y=self.y.crop(top, height),
                               x=self.x.crop(left, width))
