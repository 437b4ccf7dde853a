"""The 11 resizes by the libraries themselves, on the host.

On a CPU host the libraries are both exact (they are the reference) and
faster than the device emulation (`resample`; 0.58x the libraries on our
2-core CPU): the systematic suite uses them there and the emulation on
accelerators, where it runs next to the model without a host round trip.
Pillow and OpenCV release the GIL while resizing, so images resize in a
thread pool.
"""

import concurrent.futures
import os
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

_PIL = {'nearest': Image.Resampling.NEAREST,
        'bilinear': Image.Resampling.BILINEAR,
        'bicubic': Image.Resampling.BICUBIC,
        'box': Image.Resampling.BOX,
        'hamming': Image.Resampling.HAMMING,
        'lanczos': Image.Resampling.LANCZOS}
_CV2 = {'nearest': cv2.INTER_NEAREST, 'linear': cv2.INTER_LINEAR,
        'area': cv2.INTER_AREA, 'cubic': cv2.INTER_CUBIC,
        'lanczos4': cv2.INTER_LANCZOS4}


def library_resize(image: np.ndarray, size: tuple[int, int],
                   method: str) -> np.ndarray:
  """Resizes one HWC uint8 image to size (h, w) with the named library call.

  Args:
    image: [H, W, C] uint8.
    size: output (height, width).
    method: one of `robustmq_jax.systematic.METHODS` ('pil_bicubic',
      'cv2_area', ...).

  Returns:
    [h, w, C] uint8, exactly what `PIL.Image.resize` / `cv2.resize` return.
  """
  oh, ow = size
  lib, _, name = method.partition('_')
  if lib == 'pil':
    return np.asarray(Image.fromarray(image).resize((ow, oh), _PIL[name]))
  out = cv2.resize(image, (ow, oh), interpolation=_CV2[name])
  return out if out.ndim == 3 else out[..., None]  # cv2 drops C == 1.


def resize_stack(images: Sequence[np.ndarray], size: tuple[int, int],
                 methods: Sequence[str],
                 crop: tuple[int, int, int, int] | None = None,
                 threads: int | None = None) -> np.ndarray:
  """Every image resized by every method, then cropped.

  Args:
    images: HWC uint8 images of any sizes.
    size: (h, w) each image is resized to.
    methods: resize method names.
    crop: (top, left, height, width) taken from each resized image, or None.
    threads: worker threads (default: one per core).

  Returns:
    [len(images), len(methods), H, W, C] uint8, (H, W) the crop's or `size`.
  """
  top, left, h, w = crop or (0, 0) + tuple(size)
  c = images[0].shape[2] if images else 3
  out = np.zeros((len(images), len(methods), h, w, c), np.uint8)

  def one(i):
    for j, m in enumerate(methods):
      out[i, j] = library_resize(images[i], size, m)[top:top + h,
                                                       left:left + w]

  workers = threads or os.cpu_count() or 1
  if workers == 1 or len(images) < 2:
    for i in range(len(images)):
      one(i)
  else:
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      list(pool.map(one, range(len(images))))
  return out
