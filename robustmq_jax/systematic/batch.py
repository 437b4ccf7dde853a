"""Resizing batches of differently sized images with one compile.

Decoded photographs differ in size, and a Recipe depends on the sizes. To
keep one compiled program per batch shape, the host pads every image to the
top-left of a common square (`pad_square`, side rounded up to a multiple of
32) and describes each image's resize as arrays (`plan_batch`): the taps of
both axes, padded to a bucketed tap count, plus per-image flags. On
device (`resample.apply_planned`) the same kernels as `resample.resize` run
with per-image taps: banded contractions (gathers) for large squares, dense
per-image matrices (built by scatter-add) for small ones. The padding never
enters a result: taps only address real pixels.

What recompiles: a new padded side, a new tap-count bucket, or a new set of
recipe kinds in a batch (e.g. the first batch where OpenCV's INTER_AREA must
enlarge an image).

Pillow's pass order depends on the image (`resize_pil.vertical_first`):
height-first images form their own kind ('fixed2v'). Per image (`lax.map`,
the CPU default of `resize_many`) only an image's own kind runs; batched, a
batch mixing kinds computes each kind present and selects per image.
"""

import functools
from typing import Callable, Mapping, Sequence

import jax
import numpy as np

from robustmq_jax.systematic import resample
from robustmq_jax.systematic.recipe import Recipe
from robustmq_jax.systematic.recipe import Taps

SIDE_MULTIPLE = 32
_FLOAT_KINDS = ('float2', 'float_seq')


def padded_side(sizes: Sequence[tuple[int, int]],
                multiple: int = SIDE_MULTIPLE) -> int:
  """The square side that holds every (h, w), rounded up to `multiple`."""
  m = max(max(int(h), int(w)) for h, w in sizes)
  return -(-m // multiple) * multiple


def pad_square(images: Sequence[np.ndarray], side: int) -> np.ndarray:
  """Stacks HWC uint8 images at the top-left of side x side zeros."""
  c = images[0].shape[2]
  out = np.zeros((len(images), side, side, c), np.uint8)
  for i, im in enumerate(images):
    out[i, :im.shape[0], :im.shape[1]] = im
  return out


def _bucket(k: int) -> int:
  """Tap-count bucket: 1, 2, 3, 4, 6, 8, 12, 16, 24, ... (few compiles)."""
  b = 1 << max(0, int(k) - 1).bit_length()
  return b * 3 // 4 if b >= 4 and k <= b * 3 // 4 else b


def _kind(r: Recipe) -> str:
  return 'fixed2v' if r.kind == 'fixed2' and r.vertical_first else r.kind


def _stack(taps: Sequence[Taps | None], k: int, dtype, out: int):
  index = np.zeros((len(taps), out, k), np.int32)
  weight = np.zeros((len(taps), out, k), dtype)
  for i, t in enumerate(taps):
    if t is not None:
      index[i, :, :t.num_taps] = t.index
      weight[i, :, :t.num_taps] = t.weight
  return index, weight


_ALL_KINDS = ('select', 'fixed2', 'fixed2v', 'fixed1', 'linear_simd',
              'float2', 'float_seq')


def _recipes(sizes, size, method, crop):
  recipes = []
  for h, w in sizes:
    r = resample.recipe((h, w), size, method)
    recipes.append(r.crop(*crop) if crop else r)
  return recipes, [_kind(r) for r in recipes]


def _layout(recipes, kinds) -> np.ndarray:
  """Per kind: [used, width taps, height taps] (bucketed), flattened."""
  out = np.zeros((len(_ALL_KINDS), 3), np.int64)
  for r, k in zip(recipes, kinds):
    row = out[_ALL_KINDS.index(k)]
    row[0] = 1
    if k != 'select':
      row[1] = max(row[1], _bucket(r.x.num_taps))
      row[2] = max(row[2], _bucket(r.y.num_taps))
  return out.reshape(-1)


def _materialize(recipes, kinds, layout) -> dict[str, np.ndarray]:
  layout = np.asarray(layout).reshape(len(_ALL_KINDS), 3)
  oh, ow = recipes[0].out_size
  present = [k for k, row in zip(_ALL_KINDS, layout) if row[0]]
  present.sort()  # `resample.apply_planned` reads kinds in sorted order.
  plan = {}
  if len(present) > 1:
    plan['branch'] = np.asarray([present.index(k) for k in kinds], np.int32)
  for kind in present:
    mine = [r if k == kind else None for r, k in zip(recipes, kinds)]
    if kind == 'select':
      plan['select/y_index'] = np.stack(
          [r.y.index[:, 0] if r else np.zeros(oh, np.int32) for r in mine])
      plan['select/x_index'] = np.stack(
          [r.x.index[:, 0] if r else np.zeros(ow, np.int32) for r in mine])
      continue
    _, kx, ky = layout[_ALL_KINDS.index(kind)]
    xs = [None if r is None else r.x for r in mine]
    ys = [None if r is None else r.y for r in mine]
    dtype = np.float32 if kind in _FLOAT_KINDS else np.int32
    if kind == 'linear_simd':
      ky = 2  # the two-tap vertical formula
    for axis, taps, k, n_out in (('x', xs, kx, ow), ('y', ys, ky, oh)):
      index, weight = _stack(taps, int(max(k, 1)), dtype, n_out)
      plan[f'{kind}/{axis}_index'] = index
      plan[f'{kind}/{axis}_weight'] = weight
    if kind == 'float_seq':
      plan['float_seq/post_scale'] = np.asarray(
          [r.post_scale if r else 1.0 for r in mine], np.float32)
      plan['float_seq/half_up'] = np.asarray(
          [bool(r and r.half_up) for r in mine])
  return plan


def plan_method(sizes: Sequence[tuple[int, int]], size: tuple[int, int],
                method: str, *, crop: tuple[int, int, int, int] | None = None
                ) -> dict[str, np.ndarray]:
  """Per-image arrays for one method (see the module docstring).

  Args:
    sizes: (h, w) of every image of the batch.
    size: (height, width) the library resizes to.
    method: one of `resample.METHODS`.
    crop: optional (top, left, height, width) of the resized image to keep.

  Returns:
    '<kind>/<field>' arrays with a leading batch axis, and 'branch' [B]
    int32 (index into the sorted kinds) when the batch mixes kinds.
  """
  recipes, kinds = _recipes(sizes, size, method, crop)
  return _materialize(recipes, kinds, _layout(recipes, kinds))


def plan_batch(sizes: Sequence[tuple[int, int]], size: tuple[int, int],
               methods: Sequence[str], *,
               crop: tuple[int, int, int, int] | None = None,
               prefix: str = '',
               agree: Callable[[np.ndarray], np.ndarray] | None = None
               ) -> dict[str, np.ndarray]:
  """`plan_method` for several methods, keys '<prefix><method>/<...>'.

  Args:
    sizes: (h, w) of every image of this host's batch.
    size: (height, width) the library resizes to.
    methods: resize methods.
    crop: optional (top, left, height, width) to keep.
    prefix: key prefix.
    agree: with several processes, an element-wise max over processes of an
      int vector, so that every host emits the same kinds and tap counts
      (hence the same global shapes).
  """
  built = [_recipes(sizes, size, m, crop) for m in methods]
  layouts = np.concatenate([_layout(r, k) for r, k in built])
  if agree is not None:
    layouts = np.asarray(agree(layouts))
  layouts = layouts.reshape(len(methods), -1)
  out = {}
  for m, (recipes, kinds), lay in zip(methods, built, layouts):
    for k, v in _materialize(recipes, kinds, lay).items():
      out[f'{prefix}{m}/{k}'] = v
  return out


def method_plan(arrays: Mapping[str, jax.Array], method: str,
                prefix: str = '') -> dict[str, jax.Array]:
  """The arrays of one method out of `plan_batch`'s dict."""
  head = f'{prefix}{method}/'
  return {k[len(head):]: v for k, v in arrays.items() if k.startswith(head)}


@functools.partial(jax.jit, static_argnames=('method', 'per_image'))
def apply_jit(images, plan, method, per_image):
  """Jitted `resample.apply_planned` (one compile per shapes and method)."""
  return resample.apply_planned(images, plan, method, per_image=per_image)


def resize_many(images: Sequence[np.ndarray], size: tuple[int, int], *,
                method: str,
                crop: tuple[int, int, int, int] | None = None) -> np.ndarray:
  """Resizes HWC uint8 images of any sizes on device, as `resize` would.

  Args:
    images: uint8 [h_i, w_i, C] arrays.
    size: (height, width) to resize to.
    method: one of `resample.METHODS`.
    crop: optional (top, left, height, width) of the result to keep.

  Returns:
    uint8 [N, height, width, C] (or the crop's size).
  """
  sizes = [im.shape[:2] for im in images]
  side = padded_side(sizes)
  plan = plan_method(sizes, tuple(size), method, crop=crop)
  per_image = jax.default_backend() == 'cpu'
  return np.asarray(apply_jit(pad_square(images, side), plan, method,
                              per_image))
