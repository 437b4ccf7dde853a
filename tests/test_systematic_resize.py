"""Device emulation of the 11 ImageNet-S resizes vs the real libraries.

Reference: Pillow's `Image.resize` and OpenCV's `cv2.resize`, called on the
host on the same uint8 images. Tolerance: at most 1 uint8 level on every
pixel (issue 6); Pillow's six methods must be bit exact. Cases cover up- and
down-scaling, square and non-square sizes, odd sizes, exact 2x factors and
non-integer ones, on random images and on scikit-image's photographs, through
both the static `resize` and the padded per-image path (`resize_many`).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from robustmq_jax import systematic
from robustmq_jax.errors import UserError
from robustmq_jax.systematic import resize_cv2
from robustmq_jax.systematic import resize_pil
from robustmq_jax.systematic.host_resize import library_resize

cv2 = pytest.importorskip('cv2')
skimage = pytest.importorskip('skimage')


def _assert_close(out, ref, method, what):
  d = np.abs(out.astype(np.int32) - ref.astype(np.int32))
  limit = 0 if method.startswith('pil_') else 1
  assert d.max() <= limit, (
      f'{method} {what}: max diff {d.max()} on {(d > 0).mean():.2%} of '
      f'pixels (allowed {limit})')


def _random(shape, seed):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def photographs(max_side: int = 400) -> list[np.ndarray]:
  """scikit-image's photographs (RGB uint8), scaled to <= max_side."""
  data = os.path.join(os.path.dirname(skimage.__file__), 'data')
  out = []
  for f in ('chelsea.png', 'coffee.png', 'astronaut.png', 'rocket.jpg'):
    img = Image.open(os.path.join(data, f)).convert('RGB')
    s = min(1.0, max_side / max(img.size))
    img = img.resize((int(img.size[0] * s), int(img.size[1] * s)),
                     Image.Resampling.BOX)
    out.append(np.asarray(img))
  return out


# (input (h, w), output (h, w)) through the static path: one compile each.
STATIC = [((32, 32), (36, 36)), ((37, 53), (19, 71)), ((64, 64), (32, 32)),
          ((30, 45), (90, 60))]


@pytest.mark.parametrize('method', systematic.METHODS)
def test_static_resize_matches_library(method):
  for i, (shape, size) in enumerate(STATIC):
    img = _random(shape + (3,), i)
    out = np.asarray(systematic.resize(img[None], size, method=method))[0]
    _assert_close(out, library_resize(img, size, method), method,
                  f'{shape}->{size}')


def _batched_cases():
  photos = photographs()  # 300x400 .. 400x400 (astronaut 400: 2x to 200)
  rand = [_random(s + (3,), 10 + i) for i, s in enumerate(
      [(32, 32), (375, 300), (200, 400), (37, 53), (256, 256), (17, 301),
       (90, 90)])]
  return [
      # Up and down to a square, as ImageNet-S does (256 then crop 224).
      ('square 256', photos + rand, (256, 256), (16, 16, 224, 224)),
      # Exact 2x and 3x factors, odd output.
      ('square 45', rand[4:] + [photos[2]], (45, 45), None),
      # Non-square output: mixes Pillow's two pass orders.
      ('36x52', rand[:4] + photos[:1], (36, 52), None),
  ]


@pytest.mark.parametrize('method', systematic.METHODS)
def test_batched_resize_matches_library(method):
  for name, images, size, crop in _batched_cases():
    out = systematic.resize_many(images, size, method=method, crop=crop)
    for img, o in zip(images, out):
      ref = library_resize(img, size, method)
      if crop:
        t, l, h, w = crop
        ref = ref[t:t + h, l:l + w]
      _assert_close(o, ref, method, f'{name}: {img.shape[:2]}')


def test_resize_is_jittable_and_accepts_hwc():
  img = _random((20, 30, 3), 0)
  f = jax.jit(lambda x: systematic.resize(x, (11, 7), method='pil_lanczos'))
  batched = f(jnp.asarray(img[None]))
  single = systematic.resize(img, (11, 7), method='pil_lanczos')
  assert batched.shape == (1, 11, 7, 3) and batched.dtype == jnp.uint8
  np.testing.assert_array_equal(np.asarray(batched[0]), np.asarray(single))
  many = np.stack([img, img[::-1]])
  mapped = jax.vmap(
      lambda im: systematic.resize(im, (9, 5), method='cv2_area'))(many)
  np.testing.assert_array_equal(
      np.asarray(mapped),
      np.asarray(systematic.resize(many, (9, 5), method='cv2_area')))


def test_resize_rejects_bad_inputs():
  img = _random((8, 8, 3), 0)
  with pytest.raises(UserError, match='method'):
    systematic.resize(img, (4, 4), method='pil_magic')
  with pytest.raises(UserError, match='dtype'):
    systematic.resize(img.astype(np.float32), (4, 4), method='pil_box')
  with pytest.raises(UserError, match='size'):
    systematic.resize(img, (0, 4), method='pil_box')


def test_pillow_pass_order_rule():
  # Height first only when it shrinks by more than twice the width's shrink.
  assert resize_pil.vertical_first(500, 375, 256, 256)   # 244 > 2 * 119
  assert not resize_pil.vertical_first(375, 500, 256, 256)
  assert not resize_pil.vertical_first(40, 40, 80, 20)   # height grows
  assert resize_pil.vertical_first(40, 40, 20, 80)


def test_weights_are_normalised_fixed_point():
  for n, m in ((32, 36), (500, 256), (7, 3)):
    for name in resize_pil.FILTERS:
      t = resize_pil.filter_taps(n, m, name)
      # Each weight rounds to the nearest 2**-22: sums within k/2 of 2**22.
      assert np.all(np.abs(t.weight.sum(1) - (1 << 22)) <= t.num_taps)
    t = resize_cv2.interp_taps(n, m, 'linear')
    np.testing.assert_array_equal(t.weight.sum(1), resize_cv2.COEF_SCALE)
    t = resize_cv2.area_taps(n, m) if n >= m else None
    if t is not None:
      np.testing.assert_allclose(t.weight.sum(1), 1.0, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize('method', systematic.METHODS)
def test_random_size_sweep(method):
  """60 random (input, output) pairs up to 640 pixels, 6 output sizes."""
  rng = np.random.default_rng(123)
  for g in range(6):
    size = tuple(int(s) for s in rng.integers(1, 320, 2))
    shapes = [tuple(int(s) for s in rng.integers(1, 640, 2))
              for _ in range(10)]
    images = [_random(s + (3,), 100 * g + i) for i, s in enumerate(shapes)]
    out = systematic.resize_many(images, size, method=method)
    for img, o in zip(images, out):
      _assert_close(o, library_resize(img, size, method), method,
                    f'{img.shape[:2]}->{size}')
