"""Per-severity parameters of the 19 corruptions at 224, 64 and 32 pixels.

Sources (hendrycks/robustness, `ImageNet-C/create_c/`):

* '224': `make_imagenet_c.py` (ImageNet-C, 224x224 centre crops).
* '64': `make_tinyimagenet_c.py` (Tiny-ImageNet-C; `make_imagenet_64_c.py`
  uses the same values).
* '32': `make_cifar_c.py` (CIFAR-10-C).

Values are copied from those scripts, severity 1 first. Where a script builds
a value (elastic: multiples of 244 / 64 / 32; zoom blur: `np.arange`), the
construction is kept so the numbers come out exactly as there. The
`imagecorruptions` package uses the 224 table at every size; we pick the table
from the image size (`table_for_size`) or by name.
"""

import dataclasses
from typing import Mapping

import numpy as np

from robustmq_jax.errors import invalid

TABLE_NAMES = ('224', '64', '32')

# Field names of each corruption's parameter tuple, in table order.
FIELDS: dict[str, tuple[str, ...]] = {
    'gaussian_noise': ('sigma',),
    'shot_noise': ('rate',),
    'impulse_noise': ('amount',),
    'speckle_noise': ('sigma',),
    'gaussian_blur': ('sigma',),
    'defocus_blur': ('radius', 'alias_sigma'),
    'glass_blur': ('sigma', 'delta', 'iterations'),
    'motion_blur': ('radius', 'sigma'),
    'zoom_blur': ('stop', 'step'),
    'snow': ('mean', 'std', 'zoom', 'threshold', 'radius', 'sigma', 'blend'),
    'frost': ('image_weight', 'frost_weight'),
    'fog': ('strength', 'decay'),
    'brightness': ('delta',),
    'contrast': ('factor',),
    'elastic_transform': ('alpha', 'sigma', 'jitter'),
    'pixelate': ('factor',),
    'jpeg_compression': ('quality',),
    'spatter': ('mean', 'std', 'sigma', 'threshold', 'intensity_or_sigma',
                'mud'),
    'saturate': ('scale', 'shift'),
}


def _elastic(side, rows):
  return tuple(tuple(side * v for v in r) for r in rows)


_T224 = {
    'gaussian_noise': (.08, .12, .18, .26, .38),
    'shot_noise': (60, 25, 12, 5, 3),
    'impulse_noise': (.03, .06, .09, .17, .27),
    'speckle_noise': (.15, .2, .35, .45, .6),
    'gaussian_blur': (1, 2, 3, 4, 6),
    'defocus_blur': ((3, .1), (4, .5), (6, .5), (8, .5), (10, .5)),
    'glass_blur': ((.7, 1, 2), (.9, 2, 1), (1, 2, 3), (1.1, 3, 2),
                   (1.5, 4, 2)),
    'motion_blur': ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    'zoom_blur': ((1.11, .01), (1.16, .01), (1.21, .02), (1.26, .02),
                  (1.31, .03)),
    'snow': ((.1, .3, 3, .5, 10, 4, .8), (.2, .3, 2, .5, 12, 4, .7),
             (.55, .3, 4, .9, 12, 8, .7), (.55, .3, 4.5, .85, 12, 8, .65),
             (.55, .3, 2.5, .85, 12, 12, .55)),
    'frost': ((1, .4), (.8, .6), (.7, .7), (.65, .7), (.6, .75)),
    'fog': ((1.5, 2), (2., 2), (2.5, 1.7), (2.5, 1.5), (3., 1.4)),
    'brightness': (.1, .2, .3, .4, .5),
    'contrast': (.4, .3, .2, .1, .05),
    # The script's comment: "244 should have been 224, but ultimately nothing
    # is incorrect"; 244 reproduces ImageNet-C.
    'elastic_transform': _elastic(244, ((2, .7, .1), (2, .08, .2),
                                        (.05, .01, .02), (.07, .01, .02),
                                        (.12, .01, .02))),
    'pixelate': (.6, .5, .4, .3, .25),
    'jpeg_compression': (25, 18, 15, 10, 7),
    'spatter': ((.65, .3, 4, .69, .6, 0), (.65, .3, 3, .68, .6, 0),
                (.65, .3, 2, .68, .5, 0), (.65, .3, 1, .65, 1.5, 1),
                (.67, .4, 1, .65, 1.5, 1)),
    'saturate': ((.3, 0), (.1, 0), (2, 0), (5, .1), (20, .2)),
}

_T64 = {
    'gaussian_noise': (.04, .08, .12, .15, .18),
    'shot_noise': (250, 100, 50, 30, 15),
    'impulse_noise': (.01, .02, .05, .08, .14),
    'speckle_noise': (.15, .2, .25, .3, .35),
    'gaussian_blur': (.5, .75, 1, 1.25, 1.5),
    'defocus_blur': ((.5, .6), (1, .1), (1.5, .1), (2.5, .01), (3, .1)),
    'glass_blur': ((.1, 1, 1), (.5, 1, 1), (.6, 1, 2), (.7, 2, 1),
                   (.9, 2, 2)),
    'motion_blur': ((10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3)),
    'zoom_blur': ((1.06, .01), (1.11, .01), (1.16, .01), (1.21, .01),
                  (1.26, .01)),
    'snow': ((.1, .2, 1, .6, 8, 3, .8), (.1, .2, 1, .5, 10, 4, .8),
             (.15, .3, 1.75, .55, 10, 4, .7), (.25, .3, 2.25, .6, 12, 6, .65),
             (.3, .3, 1.25, .65, 14, 12, .6)),
    'frost': ((1, .3), (.9, .4), (.8, .45), (.75, .5), (.7, .55)),
    'fog': ((.4, 3), (.7, 3), (1, 2.5), (1.5, 2), (2, 1.75)),
    'brightness': (.1, .2, .3, .4, .5),
    'contrast': (.4, .3, .2, .1, .05),
    'elastic_transform': _elastic(64, ((0, 0, .08), (.05, .3, .06),
                                       (.1, .08, .06), (.1, .03, .03),
                                       (.16, .03, .02))),
    'pixelate': (.9, .8, .7, .6, .5),
    'jpeg_compression': (65, 58, 50, 40, 25),
    'spatter': ((.62, .1, .7, .7, .6, 0), (.65, .1, .8, .7, .6, 0),
                (.65, .3, 1, .69, .6, 0), (.65, .1, .7, .68, .6, 1),
                (.65, .1, .5, .67, .6, 1)),
    'saturate': ((.3, 0), (.1, 0), (2, 0), (5, .1), (30, .2)),
}

_T32 = {
    'gaussian_noise': (.04, .06, .08, .09, .10),
    'shot_noise': (500, 250, 100, 75, 50),
    'impulse_noise': (.01, .02, .03, .05, .07),
    'speckle_noise': (.06, .1, .12, .16, .2),
    'gaussian_blur': (.4, .6, .7, .8, 1),
    'defocus_blur': ((.3, .4), (.4, .5), (.5, .6), (1, .2), (1.5, .1)),
    'glass_blur': ((.05, 1, 1), (.25, 1, 1), (.4, 1, 1), (.25, 1, 2),
                   (.4, 1, 2)),
    'motion_blur': ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
    'zoom_blur': ((1.06, .01), (1.11, .01), (1.16, .01), (1.21, .01),
                  (1.26, .01)),
    'snow': ((.1, .2, 1, .6, 8, 3, .95), (.1, .2, 1, .5, 10, 4, .9),
             (.15, .3, 1.75, .55, 10, 4, .9), (.25, .3, 2.25, .6, 12, 6, .85),
             (.3, .3, 1.25, .65, 14, 12, .8)),
    'frost': ((1, .2), (1, .3), (.9, .4), (.85, .4), (.75, .45)),
    'fog': ((.2, 3), (.5, 3), (.75, 2.5), (1, 2), (1.5, 1.75)),
    'brightness': (.05, .1, .15, .2, .3),
    'contrast': (.75, .5, .4, .3, .15),
    'elastic_transform': _elastic(32, ((0, 0, .08), (.05, .2, .07),
                                       (.08, .06, .06), (.1, .04, .05),
                                       (.1, .03, .03))),
    'pixelate': (.95, .9, .85, .75, .65),
    'jpeg_compression': (80, 65, 58, 50, 40),
    'spatter': ((.62, .1, .7, .7, .5, 0), (.65, .1, .8, .7, .5, 0),
                (.65, .3, 1, .69, .5, 0), (.65, .1, .7, .69, .6, 1),
                (.65, .1, .5, .68, .6, 1)),
    'saturate': ((.3, 0), (.1, 0), (1.5, 0), (2, .1), (2.5, .2)),
}


@dataclasses.dataclass(frozen=True)
class Table:
  """One size's parameters.

  Attributes:
    name: '224', '64' or '32'.
    side: the image side the table was written for.
    source: the hendrycks/robustness script it comes from.
    values: corruption name -> five per-severity values (scalars or tuples).
    frost_scale: the frost pictures are resized by this factor (cv2 bilinear)
      before the random crop (1.0: used at native size).
  """
  name: str
  side: int
  source: str
  values: Mapping[str, tuple]
  frost_scale: float

  def fields(self, corruption: str) -> dict[str, np.ndarray]:
    """Field name -> float64 array [5] (severity 1 first)."""
    rows = self.values[corruption]
    names = FIELDS[corruption]
    arr = np.asarray([r if isinstance(r, tuple) else (r,) for r in rows],
                     np.float64)
    return {n: arr[:, i] for i, n in enumerate(names)}

  def zoom_factors(self) -> list[np.ndarray]:
    """The zoom-blur factor lists: `np.arange(1, stop, step)` per severity.

    Floating-point `arange` gives 12/16/11/13/11 factors at 224 and
    7/12/16/21/26 at 64 and 32, as in the scripts.
    """
    return [np.arange(1, stop, step) for stop, step in
            self.values['zoom_blur']]


TABLES: dict[str, Table] = {
    '224': Table('224', 224, 'hendrycks/robustness ImageNet-C/create_c/'
                 'make_imagenet_c.py', _T224, 1.0),
    '64': Table('64', 64, 'hendrycks/robustness ImageNet-C/create_c/'
                'make_tinyimagenet_c.py', _T64, 0.3),
    '32': Table('32', 32, 'hendrycks/robustness ImageNet-C/create_c/'
                'make_cifar_c.py', _T32, 0.2),
}


def table_for_size(side: int) -> str:
  """The table whose native side is closest to `side` (in log scale).

  32 -> '32', 64 -> '64', 224 -> '224'; other sizes take the nearest one
  (e.g. 48 -> '32' or '64' by log distance, 96 -> '64', 299 -> '224').
  """
  return min(TABLE_NAMES,
             key=lambda n: (abs(np.log(side / TABLES[n].side)), -int(n)))


def get_table(name: str | None, side: int) -> Table:
  """Table by name ('224', '64', '32'), or from the side if None / 'auto'."""
  if name is None or name == 'auto':
    return TABLES[table_for_size(side)]
  name = str(name)
  if name not in TABLES:
    raise invalid('table', name, ('auto',) + TABLE_NAMES)
  return TABLES[name]
