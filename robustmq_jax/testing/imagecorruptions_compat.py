"""Runs `imagecorruptions` 1.1.2 on NumPy 2, scikit-image 0.26, setuptools 80+.

The released package fails on today's stack in four places, patched here
(for the tests and benchmarks only; the library never imports it):

* `from pkg_resources import resource_filename` (setuptools >= 80 dropped
  pkg_resources): a stand-in module resolving paths inside the package.
* `np.float_` (removed in NumPy 2; fog's plasma fractal): aliased to float64.
* `gaussian(..., multichannel=True)` (removed from scikit-image): translated
  to `channel_axis=-1`, in `skimage.filters` and in the package's namespace
  (glass_blur, gaussian_blur).

`reference(name, image, severity, table)` then runs the package's own code
with the parameters of any of our tables (224 / 64 / 32), by substituting the
`c = [...]` list in the function's source, and with hendrycks/robustness
behaviour where the package departs from it (see `HENDRYCKS_PATCHES`).
"""

import functools
import importlib.util
import inspect
import os
import re
import sys
import types

import numpy as np


def _install_pkg_resources_stub():
  if 'pkg_resources' in sys.modules:
    return
  try:
    import pkg_resources  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    return
  except ImportError:
    pass
  stub = types.ModuleType('pkg_resources')

  def resource_filename(package, path):
    spec = importlib.util.find_spec(package.split('.')[0])
    base = os.path.dirname(spec.origin)
    return os.path.normpath(os.path.join(base, path))

  stub.resource_filename = resource_filename
  sys.modules['pkg_resources'] = stub


def _gaussian_compat(gaussian):
  @functools.wraps(gaussian)
  def wrapper(image, *args, multichannel=None, **kwargs):
    if multichannel:
      kwargs.setdefault('channel_axis', -1)
    return gaussian(image, *args, **kwargs)
  wrapper.__wrapped_compat__ = True
  return wrapper


@functools.cache
def load():
  """Imports and patches imagecorruptions; returns its `corruptions` module."""
  if not hasattr(np, 'float_'):
    np.float_ = np.float64
  _install_pkg_resources_stub()
  import skimage.filters  # pylint: disable=g-import-not-at-top
  if not getattr(skimage.filters.gaussian, '__wrapped_compat__', False):
    skimage.filters.gaussian = _gaussian_compat(skimage.filters.gaussian)
  import warnings  # pylint: disable=g-import-not-at-top
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', DeprecationWarning)
    from imagecorruptions import corruptions  # pylint: disable=g-import-not-at-top
  corruptions.gaussian = skimage.filters.gaussian
  return corruptions


def frost_dir() -> str:
  spec = importlib.util.find_spec('imagecorruptions')
  return os.path.join(os.path.dirname(spec.origin), 'frost')


# ---------------------------------------------------------------------------
# hendrycks/robustness behaviour where the package differs (our target).


def hendrycks_clipped_zoom(img, zoom_factor):
  """Centre crop of ceil(h / z), bilinear scipy zoom, centre trim to h."""
  from scipy.ndimage import zoom as scizoom  # pylint: disable=g-import-not-at-top
  h = img.shape[0]
  ch = int(np.ceil(h / zoom_factor))
  top = (h - ch) // 2
  out = scizoom(img[top:top + ch, top:top + ch], (zoom_factor, zoom_factor, 1),
                order=1)
  trim = (out.shape[0] - h) // 2
  return out[trim:trim + h, trim:trim + h]


def hendrycks_pixelate(pil_image, factor):
  """PIL BOX down to int(side * c), BOX back up (the package uses NEAREST)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  w, h = pil_image.size
  small = pil_image.resize((int(w * factor), int(h * factor)), Image.BOX)
  return small.resize((w, h), Image.BOX)


@functools.cache
def frost_picture(idx, scale):
  """hendrycks' frost picture `idx` (cv2, BGR), resized by `scale`."""
  import cv2  # pylint: disable=g-import-not-at-top
  names = ['frost1.png', 'frost2.png', 'frost3.png', 'frost4.jpg',
           'frost5.jpg', 'frost6.jpg']
  frost = cv2.imread(os.path.join(frost_dir(), names[idx]))
  if scale != 1:
    frost = cv2.resize(frost, (0, 0), fx=scale, fy=scale)
  return frost


def hendrycks_frost(x, image_weight, frost_weight, idx, row, col, scale):
  """Frost picture `idx`, resized by `scale`, cropped at (row, col)."""
  frost = frost_picture(idx, scale)
  h, w = x.shape[:2]
  crop = frost[row:row + h, col:col + w][..., [2, 1, 0]]
  return np.clip(image_weight * np.asarray(x, np.float64) + frost_weight * crop,
                 0, 255)


def hendrycks_elastic(x, alpha, sigma, jitter, jitter_draws, dx_draws,
                      dy_draws):
  """hendrycks' elastic transform with given random draws.

  Random affine of three points around the centre (cv2 warpAffine, reflect
  101), then Gaussian-smoothed displacement fields (skimage, mode reflect,
  truncate 3) times alpha, resampled with scipy map_coordinates (order 1,
  mode reflect). Draws: jitter [3, 2] in [-1, 1] (scaled by `jitter`), dx/dy
  [H, W] in [-1, 1].
  """
  import cv2  # pylint: disable=g-import-not-at-top
  from scipy.ndimage import map_coordinates  # pylint: disable=g-import-not-at-top
  from skimage.filters import gaussian  # pylint: disable=g-import-not-at-top
  image = np.asarray(x, np.float32) / 255.
  shape = image.shape
  size = shape[:2]
  centre = np.float32(size) // 2
  half = min(size) // 3
  pts1 = np.float32([centre + half, [centre[0] + half, centre[1] - half],
                     centre - half])
  pts2 = pts1 + (np.asarray(jitter_draws) * jitter).astype(np.float32)
  m = cv2.getAffineTransform(pts1, pts2)
  image = cv2.warpAffine(image, m, size[::-1],
                         borderMode=cv2.BORDER_REFLECT_101)
  dx = (gaussian(np.asarray(dx_draws, np.float64), sigma=sigma,
                 mode='reflect', truncate=3) * alpha).astype(np.float32)
  dy = (gaussian(np.asarray(dy_draws, np.float64), sigma=sigma,
                 mode='reflect', truncate=3) * alpha).astype(np.float32)
  dx, dy = dx[..., None], dy[..., None]
  xx, yy, zz = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]),
                           np.arange(shape[2]))
  idx = (np.reshape(yy + dy, (-1, 1)), np.reshape(xx + dx, (-1, 1)),
         np.reshape(zz, (-1, 1)))
  out = map_coordinates(image, idx, order=1, mode='reflect').reshape(shape)
  return np.clip(out, 0, 1) * 255


def _with_params(fn, values):
  """`fn` recompiled from its source with `c = VALUES[severity - 1]`."""
  src = inspect.getsource(fn)
  new, n = re.subn(r'c = \[.*?\]\[\s*severity - 1\]', 'c = __C__[severity - 1]',
                   src, count=1, flags=re.S)
  if n != 1:
    raise ValueError(f'no parameter list found in {fn.__name__}')
  ns = dict(fn.__globals__)
  ns['__C__'] = values
  exec(compile(new, inspect.getsourcefile(fn), 'exec'), ns)  # pylint: disable=exec-used
  return ns[fn.__name__]


def reference_values(name, table):
  """The per-severity list our table gives, in the package's layout."""
  if name == 'zoom_blur':
    return table.zoom_factors()
  return list(table.values[name])


def package_values(name):
  """The per-severity list hard-coded in the package's function."""
  corruptions = load()
  src = inspect.getsource(getattr(corruptions, name))
  m = re.search(r'c = (\[.*?\])\[\s*severity - 1\]', src, flags=re.S)
  return eval(m.group(1), {'np': np})  # pylint: disable=eval-used


@functools.cache
def _patched(name, table_name):
  from robustmq_jax.corruptions import params  # pylint: disable=g-import-not-at-top
  corruptions = load()
  fn = getattr(corruptions, name)
  table = params.TABLES[table_name]
  return _with_params(fn, reference_values(name, table))


def reference(name, image, severity, table_name='224'):
  """The package's `name` at `severity` with our table's parameters.

  Follows hendrycks/robustness for zoom_blur and snow (centre-trimmed
  clipped_zoom) and pixelate (BOX up-sampling). Not for frost and
  elastic_transform, whose package versions are different algorithms: use
  `hendrycks_frost` / `hendrycks_elastic`.

  Args:
    name: corruption name.
    image: uint8 HWC.
    severity: 1..5.
    table_name: '224', '64' or '32'.

  Returns:
    float64 HWC in [0, 255] (before the dataset writers' uint8 cast).
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  corruptions = load()
  pil = Image.fromarray(image)
  if name == 'pixelate':
    from robustmq_jax.corruptions import params  # pylint: disable=g-import-not-at-top
    c = params.TABLES[table_name].values['pixelate'][severity - 1]
    return np.asarray(hendrycks_pixelate(pil, c), np.float64)
  fn = _patched(name, table_name)
  saved = corruptions.clipped_zoom
  corruptions.clipped_zoom = hendrycks_clipped_zoom
  try:
    fn.__globals__['clipped_zoom'] = hendrycks_clipped_zoom
    out = fn(pil, severity)
  finally:
    corruptions.clipped_zoom = saved
  return np.asarray(out, np.float64)


def reference_random(name, image, severity, table_name, rng):
  """One random draw of the reference, for statistics.

  The package's own function (global NumPy RNG, seeded from `rng`) with our
  table's parameters; hendrycks' frost (picture and crop from `rng`) and
  elastic transform (uniform draws from `rng`).
  """
  from robustmq_jax.corruptions import params  # pylint: disable=g-import-not-at-top
  table = params.TABLES[table_name]
  if name == 'frost':
    f = table.fields('frost')
    idx = int(rng.integers(5))  # randint(5): frost6 is never used
    pic = frost_picture(idx, table.frost_scale)
    h, w = image.shape[:2]
    row = int(rng.integers(0, pic.shape[0] - h))
    col = int(rng.integers(0, pic.shape[1] - w))
    return hendrycks_frost(image, f['image_weight'][severity - 1],
                           f['frost_weight'][severity - 1], idx, row, col,
                           table.frost_scale)
  if name == 'elastic_transform':
    f = table.fields(name)
    h, w = image.shape[:2]
    return hendrycks_elastic(
        image, f['alpha'][severity - 1], f['sigma'][severity - 1],
        f['jitter'][severity - 1], rng.uniform(-1, 1, (3, 2)),
        rng.uniform(-1, 1, (h, w)), rng.uniform(-1, 1, (h, w)))
  np.random.seed(int(rng.integers(2**31)))
  return reference(name, image, severity, table_name)
