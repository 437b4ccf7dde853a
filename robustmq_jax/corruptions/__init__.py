"""ImageNet-C corruptions in JAX: batched, seeded, severity traced.

The 15 benchmark corruptions and 4 extras of Hendrycks & Dietterich
(arXiv 1903.12261), reimplemented from hendrycks/robustness
(`ImageNet-C/create_c/make_*_c.py`) and `imagecorruptions`, as pure
functions ``fn(key, images, *, severity, table=None)`` on NHWC float images
in [0, 1] (see `base.corruption`). They compose with `jax.jit` and `vmap`
and run on any backend, on device, NumPy/OpenCV/PIL-free. Every image draws
from its own key, so with keys derived from example ids (`keys_for_ids`)
results do not depend on batch size or device count:

    keys = corruptions.keys_for_ids(jax.random.key(0), ids)
    fog = jax.jit(corruptions.fog)  # severity traced: one compile for 1..5
    out = fog(keys, images, severity=3)
    # By name: jax.jit(corruptions.apply, static_argnums=0,
    #                  static_argnames='table')

Severity is a traced value in all 19 (one compile per corruption and image
shape): parameters are gathered from per-severity arrays, and what would
change shapes is padded to the largest severity (defocus kernels), looped
with a traced trip count (motion-blur taps, zoom factors, glass-blur passes)
or switched with `lax.cond` (spatter's water / mud).

Parameters: `params.py` (224 / 64 / 32 tables, chosen from the image side).
Where we follow `imagecorruptions` rather than hendrycks/robustness (no
ImageNet-C script can run today): motion blur and snow's blur use its NumPy
kernel instead of ImageMagick, and snow's layer is rounded as there.
"""

from robustmq_jax.corruptions import blur
from robustmq_jax.corruptions import digital
from robustmq_jax.corruptions import jpeg
from robustmq_jax.corruptions import noise
from robustmq_jax.corruptions import weather
from robustmq_jax.corruptions.base import SPECS
from robustmq_jax.corruptions.params import get_table
from robustmq_jax.corruptions.params import table_for_size
from robustmq_jax.corruptions.params import TABLES
from robustmq_jax.corruptions.rng import keys_for_ids
from robustmq_jax.errors import invalid

gaussian_noise = noise.gaussian_noise
shot_noise = noise.shot_noise
impulse_noise = noise.impulse_noise
speckle_noise = noise.speckle_noise
defocus_blur = blur.defocus_blur
glass_blur = blur.glass_blur
motion_blur = blur.motion_blur
zoom_blur = blur.zoom_blur
gaussian_blur = blur.gaussian_blur
snow = weather.snow
frost = weather.frost
fog = weather.fog
spatter = weather.spatter
brightness = digital.brightness
contrast = digital.contrast
elastic_transform = digital.elastic_transform
pixelate = digital.pixelate
saturate = digital.saturate
jpeg_compression = jpeg.jpeg_compression

# The 15 corruptions of the benchmark (mCE), in the paper's order.
BENCHMARK = ('gaussian_noise', 'shot_noise', 'impulse_noise', 'defocus_blur',
             'glass_blur', 'motion_blur', 'zoom_blur', 'snow', 'frost', 'fog',
             'brightness', 'contrast', 'elastic_transform', 'pixelate',
             'jpeg_compression')
# The 4 held-out ("validation") corruptions.
EXTRA = ('speckle_noise', 'gaussian_blur', 'spatter', 'saturate')
ALL = BENCHMARK + EXTRA

DISPLAY_NAMES = {
    'gaussian_noise': 'Gaussian Noise', 'shot_noise': 'Shot Noise',
    'impulse_noise': 'Impulse Noise', 'defocus_blur': 'Defocus Blur',
    'glass_blur': 'Glass Blur', 'motion_blur': 'Motion Blur',
    'zoom_blur': 'Zoom Blur', 'snow': 'Snow', 'frost': 'Frost', 'fog': 'Fog',
    'brightness': 'Brightness', 'contrast': 'Contrast',
    'elastic_transform': 'Elastic', 'pixelate': 'Pixelate',
    'jpeg_compression': 'JPEG', 'speckle_noise': 'Speckle Noise',
    'gaussian_blur': 'Gaussian Blur', 'spatter': 'Spatter',
    'saturate': 'Saturate',
}

_FUNCTIONS = {name: globals()[name] for name in ALL}


def list_corruptions(subset: str = 'all') -> list[str]:
  """Names: subset 'all' (19), 'benchmark' (15), 'extra' (4), or a family
  ('noise', 'blur', 'weather', 'digital')."""
  if subset == 'all':
    return list(ALL)
  if subset == 'benchmark':
    return list(BENCHMARK)
  if subset == 'extra':
    return list(EXTRA)
  families = sorted({s.family for s in SPECS.values()})
  if subset in families:
    return [n for n in ALL if SPECS[n].family == subset]
  raise invalid('subset', subset, ['all', 'benchmark', 'extra'] + families)


def get(name: str):
  """The public function of corruption `name`."""
  if name not in _FUNCTIONS:
    raise invalid('corruption', name, ALL)
  return _FUNCTIONS[name]


def is_random(name: str) -> bool:
  """False for the corruptions that depend only on image and severity."""
  get(name)
  return SPECS[name].random


def apply(name: str, key, images, *, severity, table=None):
  """Applies corruption `name`; same arguments as the individual functions.

  Args:
    name: one of `list_corruptions()` (static under jit).
    key: a PRNG key, or one key per image (see `keys_for_ids`).
    images: [N, H, W, 3] floats in [0, 1] or uint8.
    severity: 1..5 (may be traced).
    table: '224', '64', '32' or None (from the image side).

  Returns:
    The corrupted images, same shape and dtype.
  """
  return get(name)(key, images, severity=severity, table=table)
