"""Weather corruptions: snow, frost, fog and spatter (brightness, also a
weather corruption in the paper, is in `digital.py` with the other colour
transforms).

Severity is traced in all four: snow's zoom geometry and motion-blur taps
are padded to the largest severity; frost and fog only change scalars;
spatter picks water (severities 1-3) or mud (4-5) with `lax.cond`, so only
the chosen branch runs.
"""

import functools
import importlib.util
import os

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from robustmq_jax.corruptions import filters
from robustmq_jax.corruptions import opencv_ops
from robustmq_jax.corruptions import rng
from robustmq_jax.corruptions.base import corruption
from robustmq_jax.errors import UserError

# ---------------------------------------------------------------------------
# Fog: diamond-square plasma fractal.


def plasma_fractal(draw, mapsize: int, decay) -> jax.Array:
  """The reference's diamond-square height map, normalised to [0, 1].

  The reference fills the map level by level with strided assignments on
  ever finer sub-grids (step s = mapsize, mapsize / 2, ..., 2): square
  centres get the mean of their four diagonal neighbours at distance h = s /
  2, then the two diamond sets the mean of their four axial neighbours at
  distance h, each plus wibble * U(-wibble, wibble), with wrap-around. Level
  l only reads and writes the points of the grid of step h, so we run it on
  that grid alone (2^(l+1) points a side, neighbours at distance 1): the
  whole map costs about 4/3 of its finest level.

  Args:
    draw: ``draw(level, stride) -> uniform [-1, 1) array`` on the sub-grid
      [::stride, ::stride] of a full map of draws (see `fog_draw`); the
      reference's squares / first / second diamonds of a level use the full
      map's values at [h::s, h::s], [0::s, h::s] and [h::s, 0::s].
    mapsize: side, a power of two.
    decay: the wibble is divided by this after every level (may be traced).

  Returns:
    float32 [mapsize, mapsize].
  """
  levels = int(np.log2(mapsize))
  decay = jnp.asarray(decay, jnp.float32)
  nxt = lambda a, axis: jnp.roll(a, -1, axis)  # neighbour at +1 (wraps)
  prv = lambda a, axis: jnp.roll(a, 1, axis)  # neighbour at -1 (wraps)
  m = jnp.zeros((1, 1), jnp.float32)  # the grid of step mapsize
  for l in range(levels):
    h = mapsize >> (l + 1)
    wibble = 100.0 / decay**l
    u = (wibble * wibble) * draw(l, h)  # [2g, 2g] on the grid of step h
    # Squares at (2i+1, 2j+1): the four corners m[i(+1), j(+1)].
    rows = m + nxt(m, 0)
    sq = (rows + nxt(rows, 1)) / 4 + u[1::2, 1::2]
    # Diamonds at (2i, 2j+1): squares above / below, m left / right; and
    # at (2i+1, 2j): squares left / right, m above / below.
    d_row = (prv(sq, 0) + sq + m + nxt(m, 1)) / 4 + u[0::2, 1::2]
    d_col = (prv(sq, 1) + sq + m + nxt(m, 0)) / 4 + u[1::2, 0::2]
    g = 2 * m.shape[0]
    even = jnp.stack([m, d_row], -1).reshape(g // 2, g)
    odd = jnp.stack([d_col, sq], -1).reshape(g // 2, g)
    m = jnp.stack([even, odd], 1).reshape(g, g)
  m = m - jnp.min(m)
  return m / jnp.max(m)


def fog_draw(seed: jax.Array, mapsize: int):
  """The `draw` of `plasma_fractal` for one example: level l uses the
  uniforms of hash stream l of a full [mapsize, mapsize] map."""
  def draw(level, stride):
    return rng.uniform_grid(rng.substream(seed, level), mapsize, stride,
                            -1.0, 1.0)
  return draw


def _prepare_fog(table, h, w):
  return table.fields('fog'), {'mapsize': filters.pow2_at_least(max(h, w))}


def fog_core(x, fractal, p):
  """Fog given the plasma map [M, M] (top-left H x W used)."""
  h, w = x.shape[0], x.shape[1]
  s = p['strength']
  max_val = jnp.max(x)
  x = x + s * fractal[:h, :w, None]
  return x * max_val / (max_val + s)


@corruption('fog', family='weather', prepare=_prepare_fog)
def fog(seed, x, p, static):
  """Fog: a plasma fractal added to the image, rescaled by the image max.

  Map side: the next power of two >= the image side (256 at 224, 64 at 64,
  32 at 32, as in the three scripts).
  """
  fractal = plasma_fractal(fog_draw(seed, static['mapsize']),
                           static['mapsize'], p['decay'])
  return fog_core(x, fractal, p)


# ---------------------------------------------------------------------------
# Frost: the reference's frost pictures.

FROST_FILES = ('frost1.png', 'frost2.png', 'frost3.png', 'frost4.jpg',
               'frost5.jpg', 'frost6.jpg')
FROST_ENV = 'ROBUSTMQ_FROST_DIR'


def frost_dir() -> str:
  """The folder with frost1.png ... frost6.jpg.

  `$ROBUSTMQ_FROST_DIR` if set, else the `frost/` folder that the
  `imagecorruptions` wheel installs (read in place, never copied). The
  package itself is not imported (it fails on NumPy 2).
  """
  path = os.environ.get(FROST_ENV)
  if not path:
    spec = importlib.util.find_spec('imagecorruptions')
    if spec is None or spec.origin is None:
      raise UserError(
          'frost needs the six frost pictures of hendrycks/robustness: '
          '`pip install --no-deps imagecorruptions==1.1.2` (it ships them), '
          f'or set ${FROST_ENV} to a folder holding {", ".join(FROST_FILES)}.')
    path = os.path.join(os.path.dirname(spec.origin), 'frost')
  missing = [f for f in FROST_FILES[:5]
             if not os.path.exists(os.path.join(path, f))]
  if missing:
    raise UserError(f'{FROST_ENV} or imagecorruptions frost folder {path!r} '
                    f'lacks {", ".join(missing)}.')
  return path


@functools.lru_cache(maxsize=None)
def frost_pictures(scale: float, h: int, w: int):
  """The five pictures the reference can pick, RGB uint8, as used at a size.

  Read with OpenCV (as the reference), resized by `scale` with cv2 bilinear
  (the 64 and 32 scripts use 0.3 and 0.2), then, only if still smaller than
  the image plus one pixel, enlarged with bicubic interpolation (what
  `imagecorruptions` does for large images; never needed at 224/64/32).

  Returns:
    (stack uint8 [5, Hmax, Wmax, 3], sizes int32 [5, 2]).
  """
  import cv2  # pylint: disable=g-import-not-at-top
  folder = frost_dir()
  pics = []
  for name in FROST_FILES[:5]:  # randint(5): frost6 is never chosen.
    img = cv2.imread(os.path.join(folder, name))
    if scale != 1:
      img = cv2.resize(img, (0, 0), fx=scale, fy=scale)
    if img.shape[0] <= h or img.shape[1] <= w:
      f = 1.1 * max((h + 1) / img.shape[0], (w + 1) / img.shape[1])
      img = cv2.resize(img, (int(np.ceil(img.shape[1] * f)),
                             int(np.ceil(img.shape[0] * f))),
                       interpolation=cv2.INTER_CUBIC)
    pics.append(img[..., ::-1])
  hmax = max(p.shape[0] for p in pics)
  wmax = max(p.shape[1] for p in pics)
  stack = np.zeros((5, hmax, wmax, 3), np.uint8)
  for i, p in enumerate(pics):
    stack[i, :p.shape[0], :p.shape[1]] = p
  sizes = np.asarray([p.shape[:2] for p in pics], np.int32)
  return stack, sizes


def _prepare_frost(table, h, w):
  return table.fields('frost'), {'scale': table.frost_scale, 'h': h, 'w': w}


def frost_choice(seed, sizes, h, w):
  """(picture index, crop row, crop col) as the reference draws them."""
  idx = rng.randint(rng.substream(seed, 0), (), 0, 5)
  size = jnp.asarray(sizes)[idx]
  row = rng.randint(rng.substream(seed, 1), (), 0, size[0] - h)
  col = rng.randint(rng.substream(seed, 2), (), 0, size[1] - w)
  return idx, row, col


def frost_core(x, stack, idx, row, col, p):
  h, w, _ = x.shape
  crop = jax.lax.dynamic_slice(jnp.asarray(stack)[idx], (row, col, 0),
                               (h, w, 3)).astype(jnp.float32)
  return (p['image_weight'] * x * 255.0 + p['frost_weight'] * crop) / 255.0


@corruption('frost', family='weather', prepare=_prepare_frost)
def frost(seed, x, p, static):
  """Frost: a random crop of one of five frost pictures blended in
  (c_img * x + c_frost * frost). Picture sizes follow hendrycks/robustness:
  native at 224, x0.3 at 64, x0.2 at 32 (`imagecorruptions` instead scales
  every picture by >= 1.1 with bicubic interpolation)."""
  stack, sizes = frost_pictures(static['scale'], static['h'], static['w'])
  idx, row, col = frost_choice(seed, sizes, static['h'], static['w'])
  return frost_core(x, stack, idx, row, col, p)


# ---------------------------------------------------------------------------
# Snow.


def _prepare_snow(table, h, w):
  f = table.fields('snow')
  geo = np.stack([filters.zoom_geometry(h, f['zoom']),
                  filters.zoom_geometry(w, f['zoom'])], axis=1)
  per_sev = dict(f)
  per_sev['geometry'] = geo.astype(np.float32)  # [5, 2, 4]
  return per_sev, {'max_radius': int(f['radius'].max())}


def rgb_to_gray_cv2(x):
  """OpenCV COLOR_RGB2GRAY on float images."""
  return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


def snow_core(x, layer, angle, p, static):
  """Snow given the N(mean, std) layer [H, W] and the blur angle."""
  from robustmq_jax.corruptions import blur  # pylint: disable=g-import-not-at-top
  layer = blur.zoom_layers(layer, p['geometry'])
  layer = jnp.where(layer < p['threshold'], 0.0, layer)
  layer = jnp.clip(layer, 0.0, 1.0)
  layer = filters.motion_blur(layer, p['radius'], p['sigma'], angle,
                              max_radius=static['max_radius'])
  # imagecorruptions rounds the blurred layer to uint8 (round-half-even).
  layer = jnp.round(layer * 255.0) / 255.0
  layer = layer[..., None]
  b = p['blend']
  gray = rgb_to_gray_cv2(x)[..., None]
  x = b * x + (1 - b) * jnp.maximum(x, gray * 1.5 + 0.5)
  return x + layer + layer[::-1, ::-1]


@corruption('snow', family='weather', prepare=_prepare_snow)
def snow(seed, x, p, static):
  """Snow: a thresholded, zoomed N(mean, std) layer, motion-blurred at an
  angle from U(-135, -45) degrees, added twice (as is and rotated 180
  degrees) to a brightened image.

  Follows `imagecorruptions` (NumPy motion blur, blurred layer rounded to
  uint8) with hendrycks' centre-trimmed zoom.
  """
  h, w, _ = x.shape
  layer = p['mean'] + p['std'] * rng.normal(rng.substream(seed, 0), (h, w))
  angle = rng.uniform(rng.substream(seed, 1), (), -135.0, -45.0)
  return snow_core(x, layer, angle, p, static)


# ---------------------------------------------------------------------------
# Spatter.


def _prepare_spatter(table, h, w):
  del h, w
  f = table.fields('spatter')
  mud = f['mud'] > 0
  return f, {
      'max_sigma': float(f['sigma'].max()),
      'max_mud_sigma': float(f['intensity_or_sigma'][mud].max()
                             if mud.any() else 0.0),
  }


def spatter_layers(normal_layer, p, static):
  """The float layers of spatter: (liquid [H, W], mud mask [H, W] or 0).

  Matrix products and a threshold: computed for the whole batch at once
  (`Spec.batched`), so their rounding never depends on the chunking of the
  integer water mask that follows.
  """
  liquid = p['mean'] + p['std'] * normal_layer
  liquid = filters.gaussian_filter(liquid, p['sigma'], (0, 1),
                                   max_sigma=static['max_sigma'])
  thr = p['threshold']
  liquid = jnp.where(liquid < thr, 0.0, liquid)

  def mud(liquid):
    m = (liquid > thr).astype(jnp.float32)
    m = filters.gaussian_filter(m, p['intensity_or_sigma'], (0, 1),
                                max_sigma=max(static['max_mud_sigma'], 1e-3))
    return jnp.where(m < 0.8, 0.0, m)

  m = lax.cond(p['mud'] > 0, mud, jnp.zeros_like, liquid)
  return liquid, m


def spatter_blend(x, liquid, mud_mask, p):
  """Spatter from its layers: water drops or mud on the image."""

  def water(x):
    # (liquid * 255).astype(uint8): truncation, wrapping above 255.
    layer = jnp.floor(liquid * 255.0).astype(jnp.int32) & 255
    m = opencv_ops.water_mask(layer)
    top = jnp.max(m)
    m = jnp.where(top > 0, m / jnp.where(top > 0, top, 1.0), 0.0)
    m = m[..., None] * p['intensity_or_sigma']
    color = jnp.asarray([175.0, 238.0, 238.0], jnp.float32) / 255.0
    return x + m * color

  def mud(x):
    m = mud_mask[..., None]
    color = jnp.asarray([63.0, 42.0, 20.0], jnp.float32) / 255.0
    return x * (1 - m) + color * m

  return lax.cond(p['mud'] > 0, mud, water, x)


def spatter_core(x, normal_layer, p, static):
  """Spatter given the standard-normal layer [H, W]."""
  return spatter_blend(x, *spatter_layers(normal_layer, p, static), p)


def _spatter_layers(seed, x, p, static):
  h, w, _ = x.shape
  return spatter_layers(rng.normal(seed, (h, w)), p, static)


@corruption('spatter', family='weather', prepare=_prepare_spatter,
            batched=_spatter_layers, cpu_chunk=2)
def spatter(layers, x, p, static):
  """Spatter: water drops (severities 1-3) or mud (4-5) on the lens.

  Water: a Gaussian-smoothed N(mean, std) layer, thresholded, cast to
  uint8; Canny edges (50, 150); distance to the nearest edge (L2 5x5
  chamfer), truncated at 20; box blur; histogram equalisation; an emboss
  kernel; box blur; the product with the layer, normalised, tints the image
  pale turquoise (`opencv_ops.water_mask`). Mud: the thresholded layer,
  blurred, keeps values >= 0.8 and blends in brown. `layers` comes from
  `spatter_layers` (run for the whole batch; see `Spec.batched`).
  """
  del static
  return spatter_blend(x, *layers, p)
