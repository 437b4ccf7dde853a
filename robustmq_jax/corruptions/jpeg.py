"""JPEG compression on the accelerator, as PIL (libjpeg-turbo) does it.

Encoder (PIL `save(format='JPEG', quality=q)` defaults): RGB -> YCbCr with
libjpeg's 16-bit fixed-point tables; 4:2:0 chroma by 2x2 averaging with
libjpeg's alternating 1/2 rounding bias; 8x8 integer DCT (`jfdctint`,
"islow"); quantisation by the Annex K tables scaled for quality q (baseline:
clamped to 1..255), rounding half away from zero. Decoder: dequantisation,
integer IDCT (`jidctint`), "fancy" triangular chroma upsampling, YCbCr -> RGB
with libjpeg's tables. Entropy coding is lossless and skipped. All integer
arithmetic follows libjpeg, so the output matches PIL's to the bit on most
pixels (the tests measure it). Quality is traced: the per-severity tables
are gathered, one compile serves all severities.

Exact for sides that are multiples of 16 (224, 64, 32); other sides are
edge-padded to the next multiple of 16 (libjpeg's encoder does the same;
its decoder's edge upsampling differs slightly on the last row/column).
"""

import jax
import jax.numpy as jnp
import numpy as np

from robustmq_jax.corruptions import filters
from robustmq_jax.corruptions.base import corruption

_LUMA = np.array([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56], [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99],
], np.int64)
_CHROMA = np.full((8, 8), 99, np.int64)
_CHROMA[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99],
                   [47, 66, 99, 99]]


def quant_tables(quality: int) -> np.ndarray:
  """libjpeg `jpeg_set_quality(q, force_baseline=TRUE)`: int32 [2, 8, 8]."""
  q = min(max(int(quality), 1), 100)
  scale = 5000 // q if q < 50 else 200 - 2 * q
  out = []
  for base in (_LUMA, _CHROMA):
    t = (base * scale + 50) // 100
    out.append(np.clip(t, 1, 255))
  return np.stack(out).astype(np.int32)


# libjpeg fixed-point constants.
_SCALEBITS = 16
_ONE_HALF = 1 << (_SCALEBITS - 1)


def _fix(x):
  return int(x * (1 << _SCALEBITS) + 0.5)


_CONST_BITS = 13
_PASS1_BITS = 2
_F0298, _F0390, _F0541, _F0765 = 2446, 3196, 4433, 6270
_F0899, _F1175, _F1501, _F1847 = 7373, 9633, 12299, 15137
_F1961, _F2053, _F2562, _F3072 = 16069, 16819, 20995, 25172


def _descale(x, n):
  return (x + (1 << (n - 1))) >> n


def _fdct_linear(d):
  """jpeg_fdct_islow's 1D pass before its final shifts (8 linear forms)."""
  tmp0, tmp7 = d[0] + d[7], d[0] - d[7]
  tmp1, tmp6 = d[1] + d[6], d[1] - d[6]
  tmp2, tmp5 = d[2] + d[5], d[2] - d[5]
  tmp3, tmp4 = d[3] + d[4], d[3] - d[4]
  tmp10, tmp13 = tmp0 + tmp3, tmp0 - tmp3
  tmp11, tmp12 = tmp1 + tmp2, tmp1 - tmp2
  z1 = (tmp12 + tmp13) * _F0541
  z1o, z2o = tmp4 + tmp7, tmp5 + tmp6
  z3o, z4o = tmp4 + tmp6, tmp5 + tmp7
  z5 = (z3o + z4o) * _F1175
  z1o, z2o = -z1o * _F0899, -z2o * _F2562
  z3o, z4o = -z3o * _F1961 + z5, -z4o * _F0390 + z5
  return [tmp10 + tmp11, tmp7 * _F1501 + z1o + z4o, z1 + tmp13 * _F0765,
          tmp6 * _F3072 + z2o + z3o, tmp10 - tmp11,
          tmp5 * _F2053 + z2o + z4o, z1 - tmp12 * _F1847,
          tmp4 * _F0298 + z1o + z3o]


def _idct_linear(d):
  """jpeg_idct_islow's 1D pass before its final shift (8 linear forms)."""
  z1 = (d[2] + d[6]) * _F0541
  tmp2 = z1 - d[6] * _F1847
  tmp3 = z1 + d[2] * _F0765
  tmp0 = (d[0] + d[4]) * (1 << _CONST_BITS)
  tmp1 = (d[0] - d[4]) * (1 << _CONST_BITS)
  tmp10, tmp13 = tmp0 + tmp3, tmp0 - tmp3
  tmp11, tmp12 = tmp1 + tmp2, tmp1 - tmp2
  o0, o1, o2, o3 = d[7], d[5], d[3], d[1]
  z1, z2 = o0 + o3, o1 + o2
  z3, z4 = o0 + o2, o1 + o3
  z5 = (z3 + z4) * _F1175
  z1, z2 = -z1 * _F0899, -z2 * _F2562
  z3, z4 = -z3 * _F1961 + z5, -z4 * _F0390 + z5
  o0 = o0 * _F0298 + z1 + z3
  o1 = o1 * _F2053 + z2 + z4
  o2 = o2 * _F3072 + z2 + z3
  o3 = o3 * _F1501 + z1 + z4
  return [tmp10 + o3, tmp11 + o2, tmp12 + o1, tmp13 + o0,
          tmp13 - o0, tmp12 - o1, tmp11 - o2, tmp10 - o3]


_EVEN = np.zeros(8, bool)
_EVEN[[0, 4]] = True


def _code_plane(plane, qtable):
  """FDCT, quantise, dequantise, IDCT of every 8x8 block of one plane.

  Each islow pass is libjpeg's butterfly on the 8 strided slices of the
  plane (row k of every block at once), so the passes are elementwise
  integer code over the whole plane: about 30 operations per 8 values,
  where an int32 8x8 matrix product costs 64 multiply-adds on XLA's slow
  integer GEMM path, and no block-layout transposes are needed until the
  end.

  Args:
    plane: int32 [H, W], H and W multiples of 8, values 0..255.
    qtable: int32 [8, 8] quantisation table.

  Returns:
    int32 [H, W], 0..255.
  """
  h, w = plane.shape
  x = plane - 128
  # Row pass: y[c] = coefficient c of every block row, [8, H, W/8].
  y = jnp.stack(_fdct_linear([x[:, k::8] for k in range(8)]))
  even = jnp.asarray(_EVEN)
  y = jnp.where(even[:, None, None], y << _PASS1_BITS,
                _descale(y, _CONST_BITS - _PASS1_BITS))
  # Column pass: z[r, c] of every block, [8, 8, H/8, W/8].
  z = jnp.stack(_fdct_linear([y[:, k::8] for k in range(8)]))
  coef = jnp.where(even[:, None, None, None], _descale(z, _PASS1_BITS),
                   _descale(z, _CONST_BITS + _PASS1_BITS))  # DCT x 8
  qt = qtable[:, :, None, None]
  div = qt * 8
  # libjpeg: (|coef| + div / 2) / div in integers. CPUs have no vector
  # integer division; in float32 the quotient is exact after flooring
  # (numerator < 2^15, divisor <= 2040: the float error, < 2^-12, is below
  # the 1 / divisor gap to the next integer).
  q = jnp.floor((jnp.abs(coef) + div // 2).astype(jnp.float32)
                / div.astype(jnp.float32)).astype(jnp.int32)
  deq = jnp.where(coef < 0, -q, q) * qt
  ws = _descale(jnp.stack(_idct_linear([deq[k] for k in range(8)])),
                _CONST_BITS - _PASS1_BITS)
  out = _descale(jnp.stack(_idct_linear([ws[:, k] for k in range(8)]), 1),
                 _CONST_BITS + _PASS1_BITS + 3)
  out = jnp.clip(out + 128, 0, 255)  # [r, c, H/8, W/8]
  return out.transpose(2, 0, 3, 1).reshape(h, w)


def _rgb_to_ycc(rgb):
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  y = (_fix(0.29900) * r + _fix(0.58700) * g + _fix(0.11400) * b
       + _ONE_HALF) >> _SCALEBITS
  off = (128 << _SCALEBITS) + _ONE_HALF - 1
  cb = (-_fix(0.16874) * r - _fix(0.33126) * g + _fix(0.5) * b + off
        ) >> _SCALEBITS
  cr = (_fix(0.5) * r - _fix(0.41869) * g - _fix(0.08131) * b + off
        ) >> _SCALEBITS
  return y, cb, cr


def _downsample(c):
  """h2v2_downsample: (sum of 2x2 + bias) >> 2, bias 1, 2, 1, 2, ..."""
  h, w = c.shape
  s = c.reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3))
  bias = 1 + (jnp.arange(w // 2) % 2)
  return (s + bias) >> 2


def _upsample(c):
  """h2v2_fancy_upsample: triangle filter, edges replicated."""
  h, w = c.shape
  above = jnp.concatenate([c[:1], c[:-1]], axis=0)
  below = jnp.concatenate([c[1:], c[-1:]], axis=0)
  # Rows 2i (nearer c[i], further c[i-1]) and 2i+1 (further c[i+1]).
  colsum = jnp.stack([3 * c + above, 3 * c + below], axis=1).reshape(2 * h, w)
  left = jnp.concatenate([colsum[:, :1], colsum[:, :-1]], axis=1)
  right = jnp.concatenate([colsum[:, 1:], colsum[:, -1:]], axis=1)
  even = (3 * colsum + left + 8) >> 4
  odd = (3 * colsum + right + 7) >> 4
  return jnp.stack([even, odd], axis=2).reshape(2 * h, 2 * w)


def _ycc_to_rgb(y, cb, cr):
  """libjpeg's YCbCr -> RGB, one broadcast expression (no channel stack)."""
  a = jnp.asarray([0, -_fix(0.34414), _fix(1.77200)], jnp.int32)
  b = jnp.asarray([_fix(1.40200), -_fix(0.71414), 0], jnp.int32)
  rgb = y[..., None] + ((a * (cb - 128)[..., None] + b * (cr - 128)[..., None]
                         + _ONE_HALF) >> _SCALEBITS)
  return jnp.clip(rgb, 0, 255)


def jpeg_roundtrip_u8(rgb: jax.Array, tables: jax.Array) -> jax.Array:
  """Encode/decode one int RGB image [H, W, 3] (0..255) with given tables.

  Args:
    rgb: integer image.
    tables: int32 [2, 8, 8] (luma, chroma) quantisation tables.

  Returns:
    int32 [H, W, 3].
  """
  h, w, _ = rgb.shape
  ph, pw = -h % 16, -w % 16
  x = rgb.astype(jnp.int32)
  if ph or pw:
    x = jnp.pad(x, ((0, ph), (0, pw), (0, 0)), mode='edge')
  y, cb, cr = _rgb_to_ycc(x)
  y = _code_plane(y, tables[0])
  # Both chroma planes in one program (half the passes over small arrays).
  chroma = jax.vmap(lambda c: _upsample(_code_plane(_downsample(c),
                                                    tables[1])))
  cb, cr = chroma(jnp.stack([cb, cr]))
  return _ycc_to_rgb(y, cb, cr)[:h, :w]


def jpeg_roundtrip(x: jax.Array, quality) -> jax.Array:
  """One float image in [0, 1] through JPEG at a static quality."""
  tables = jnp.asarray(quant_tables(quality))
  u8 = jnp.round(jnp.clip(x, 0, 1) * 255.0).astype(jnp.int32)
  return jpeg_roundtrip_u8(u8, tables).astype(jnp.float32) / 255.0


def _prepare_jpeg(table, h, w):
  del h, w
  qs = table.fields('jpeg_compression')['quality']
  return {'tables': np.stack([quant_tables(q) for q in qs])}, {}


@corruption('jpeg_compression', family='digital', random=False,
            prepare=_prepare_jpeg)
def jpeg_compression(seed, x, p, static):
  """JPEG compression at the severity's quality (PIL defaults: 4:2:0, islow
  DCT, standard tables), encoded and decoded on device. The input is rounded
  to uint8 first, as PIL needs."""
  del seed, static
  # Stored once: XLA would otherwise fuse the rounding into each of the
  # colour conversion's reads (1.4x slower on a CPU).
  u8 = filters.unfused(lambda v: jnp.round(v * 255.0).astype(jnp.int32), x,
                       p['tables'][0, 0, 0] > 0)
  return jpeg_roundtrip_u8(u8, p['tables']).astype(jnp.float32) / 255.0
