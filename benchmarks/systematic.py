"""The 11 ImageNet-S resizes: device emulation vs PIL / OpenCV on the host.

Both run side by side in one process on the same 32 photographs (crops of
scikit-image's colour photographs, 240..520 pixels a side, mixed aspect,
like ImageNet's ~500x375), resized to 256 x 256 with all 11 methods:

* host: `Image.resize` / `cv2.resize` image by image (the libraries' own C,
  SIMD code; PIL images prepared beforehand), as a data pipeline calls them;
* ours: one jitted call per method on the padded batch
  (`robustmq_jax.systematic.resize_many`'s path: per-image taps as arrays,
  one compile per padded size; on CPU one image at a time inside the
  program), inputs already on device; compile excluded; plus the same with
  the host-side plan building and the host->device transfer included
  ("end to end").

Median of `--repeats` runs. Prints ms per method for both and the ratio
host / ours (> 1: ours is faster), then the whole grid. The emulation's
outputs are compared with the libraries' before timing: the largest
difference is the `max|d|` column (the tests hold it to 1 level on a CPU);
a method above 1 level is flagged on stderr and still timed, so that a
device whose arithmetic differs still brings back its table.

    JAX_PLATFORMS=cpu python benchmarks/systematic.py [--repeats 5]
"""

import argparse
import functools
import os
import statistics
import sys
import time

import jax
import numpy as np
from PIL import Image

from robustmq_jax import systematic
from robustmq_jax.systematic import batch as batch_lib

_PIL = {'nearest': Image.Resampling.NEAREST,
        'bilinear': Image.Resampling.BILINEAR,
        'bicubic': Image.Resampling.BICUBIC, 'box': Image.Resampling.BOX,
        'hamming': Image.Resampling.HAMMING,
        'lanczos': Image.Resampling.LANCZOS}


def photographs(n: int = 32, seed: int = 0) -> list[np.ndarray]:
  import skimage  # pylint: disable=g-import-not-at-top
  data = os.path.join(os.path.dirname(skimage.__file__), 'data')
  names = ('astronaut.png', 'chelsea.png', 'coffee.png', 'rocket.jpg',
           'retina.jpg', 'hubble_deep_field.jpg', 'motorcycle_left.png',
           'ihc.png')
  srcs = [np.asarray(Image.open(os.path.join(data, f)).convert('RGB'))
          for f in names]
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    img = srcs[i % len(srcs)]
    h = int(rng.integers(240, min(520, img.shape[0]) + 1))
    w = int(rng.integers(240, min(520, img.shape[1]) + 1))
    top = int(rng.integers(0, img.shape[0] - h + 1))
    left = int(rng.integers(0, img.shape[1] - w + 1))
    out.append(np.ascontiguousarray(img[top:top + h, left:left + w]))
  return out


def host_fn(method: str, images):
  import cv2  # pylint: disable=g-import-not-at-top
  lib, _, name = method.partition('_')
  if lib == 'pil':
    pil = [Image.fromarray(im) for im in images]
    f = _PIL[name]
    return lambda: [np.asarray(p.resize((256, 256), f)) for p in pil]
  flag = {'nearest': cv2.INTER_NEAREST, 'linear': cv2.INTER_LINEAR,
          'area': cv2.INTER_AREA, 'cubic': cv2.INTER_CUBIC,
          'lanczos4': cv2.INTER_LANCZOS4}[name]
  return lambda: [cv2.resize(im, (256, 256), interpolation=flag)
                  for im in images]


def median_time(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def _run(apply, padded, plan, method):
  apply(padded, plan, method=method).block_until_ready()


def _end_to_end(apply, images, sizes, side, method):
  plan = jax.device_put(batch_lib.plan_method(sizes, (256, 256), method))
  x = jax.device_put(batch_lib.pad_square(images, side))
  apply(x, plan, method=method).block_until_ready()


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--repeats', type=int, default=5)
  p.add_argument('--n', type=int, default=32)
  args = p.parse_args()
  images = photographs(args.n)
  sizes = [im.shape[:2] for im in images]
  side = batch_lib.padded_side(sizes)
  print(f'{len(images)} photographs, {min(sizes)}..{max(sizes)}, padded to '
        f'{side}x{side}; output 256x256; device: {jax.devices()[0]}')
  padded = jax.device_put(batch_lib.pad_square(images, side))
  apply = functools.partial(batch_lib.apply_jit,
                            per_image=jax.default_backend() == 'cpu')
  rows = []
  tot_host = tot_dev = tot_e2e = 0.0
  for m in systematic.METHODS:
    host = host_fn(m, images)
    ref = host()
    t = time.perf_counter()
    plan_np = batch_lib.plan_method(sizes, (256, 256), m)
    t_plan = time.perf_counter() - t
    plan = jax.device_put(plan_np)
    t = time.perf_counter()
    out = np.asarray(apply(padded, plan, method=m))
    t_compile = time.perf_counter() - t
    worst = max(int(np.abs(o.astype(int) - r).max())
                for o, r in zip(out, ref))
    if worst > 1:
      print(f'WARNING: {m} differs from the library by {worst} levels',
            file=sys.stderr, flush=True)
    t_host = median_time(host, args.repeats)
    t_dev = median_time(
        functools.partial(_run, apply, padded, plan, m), args.repeats)
    t_e2e = median_time(
        functools.partial(_end_to_end, apply, images, sizes, side, m),
        args.repeats)
    tot_host, tot_dev, tot_e2e = (tot_host + t_host, tot_dev + t_dev,
                                  tot_e2e + t_e2e)
    rows.append((m, t_host, t_dev, t_e2e, t_plan, t_compile, worst))
  print(f'{"method":14s} {"host ms":>9s} {"ours ms":>9s} {"ratio":>7s} '
        f'{"ours e2e":>9s} {"ratio":>7s} {"plan ms":>8s} {"compile s":>9s} '
        f'{"max|d|":>6s}')
  for m, th, td, te, tp, tc, w in rows:
    print(f'{m:14s} {1e3 * th:9.1f} {1e3 * td:9.1f} {th / td:7.2f} '
          f'{1e3 * te:9.1f} {th / te:7.2f} {1e3 * tp:8.1f} {tc:9.2f} {w:6d}')
  print(f'{"all 11":14s} {1e3 * tot_host:9.1f} {1e3 * tot_dev:9.1f} '
        f'{tot_host / tot_dev:7.2f} {1e3 * tot_e2e:9.1f} '
        f'{tot_host / tot_e2e:7.2f}')
  print('ratio = host time / our time (> 1: the device emulation is faster).')


if __name__ == '__main__':
  main()
