"""Corruption throughput: ours (JAX, batched, jitted) vs `imagecorruptions`.

Both run side by side in one process on the same 224x224 photographs
(scikit-image's sample images, centre crops), at the same severity:

* ours: one jitted call per batch of `--batch` images (severity traced, so
  the compile is shared by all severities; compile time excluded), median of
  `--repeats` runs;
* reference: `imagecorruptions.corrupt` (1.1.2, patched for NumPy 2 by
  robustmq_jax/testing/imagecorruptions_compat.py) image by image, as its
  users call it.

The two alternate for `--rounds` rounds per corruption (the reference's
time budget is split between them), so that a shared machine whose speed
drifts slows both alike; the speed-up is the median of the rounds' ratios.
Prints images/s for both, the speed-up and its geometric mean.

    JAX_PLATFORMS=cpu python benchmarks/corruptions.py [--severity 3]
        [--batch 32] [--names fog,snow] [--quick]

`--quick` (benchmarks/all.py): one round, 2 repeats, 4 s of reference per
corruption.
"""

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

# This checkout's package, whichever one is installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from robustmq_jax import corruptions  # pylint: disable=g-import-not-at-top
from robustmq_jax.testing import imagecorruptions_compat  # pylint: disable=g-import-not-at-top


def photos(n: int, side: int = 224) -> np.ndarray:
  """n uint8 RGB crops of scikit-image's sample photographs."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  import skimage.transform  # pylint: disable=g-import-not-at-top
  srcs = [skimage.data.astronaut(), skimage.data.chelsea(),
          skimage.data.coffee(), skimage.data.rocket(),
          skimage.data.immunohistochemistry(), skimage.data.retina()]
  out = []
  for i in range(n):
    img = srcs[i % len(srcs)]
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    img = img[top:top + s, left:left + s]
    img = skimage.transform.resize(img, (side, side), anti_aliasing=True)
    if i >= len(srcs):  # Vary the copies a little.
      img = np.roll(img, 17 * (i // len(srcs)), axis=1)
    out.append(np.round(img * 255).astype(np.uint8))
  return np.stack(out)


def compile_ours(name, images, severity):
  """The jitted corruption, its inputs and its compile time (seconds)."""
  fn = jax.jit(lambda k, x, s: corruptions.apply(name, k, x, severity=s))
  args = (jax.random.key(0), jnp.asarray(images, jnp.float32) / 255.0,
          severity)
  t = time.perf_counter()
  fn(*args).block_until_ready()
  return fn, args, time.perf_counter() - t


def time_ours(fn, args, repeats):
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn(*args).block_until_ready()
    times.append(time.perf_counter() - t)
  return len(args[1]) / statistics.median(times)


def time_reference(name, images, severity, budget_s):
  compat = imagecorruptions_compat
  compat.load()
  from imagecorruptions import corrupt  # pylint: disable=g-import-not-at-top
  corrupt(images[0], severity=severity, corruption_name=name)  # warm-up
  done = 0
  t = time.perf_counter()
  for img in images:
    corrupt(img, severity=severity, corruption_name=name)
    done += 1
    if time.perf_counter() - t > budget_s:
      break
  return done / (time.perf_counter() - t), done


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--severity', type=int, default=3)
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--reference_budget_s', type=float, default=10.0,
                      help='stop the reference after this long (seconds)')
  parser.add_argument('--names', default='all')
  parser.add_argument('--quick', action='store_true',
                      help='1 round, 2 repeats, 4 s of reference each')
  args = parser.parse_args()
  if args.quick:
    args.rounds, args.repeats = 1, min(args.repeats, 2)
    args.reference_budget_s = min(args.reference_budget_s, 4.0)
  for flag in ('repeats', 'rounds', 'batch'):
    if getattr(args, flag) < 1:
      parser.error(f'--{flag}={getattr(args, flag)}: must be an integer >= 1')
  names = (corruptions.list_corruptions() if args.names == 'all'
           else args.names.split(','))
  images = photos(args.batch)
  print(f'jax {jax.__version__} on {jax.devices()[0].platform}, '
        f'{os.cpu_count()} CPUs; batch {args.batch} x 224x224, severity '
        f'{args.severity}; load average {os.getloadavg()[0]:.1f}')
  print(f'{"corruption":18s} {"ours img/s":>10s} {"ref img/s":>10s} '
        f'{"speed-up":>9s} {"compile s":>9s} {"ref n":>5s}')
  ratios = []
  for name in names:
    fn, fn_args, compile_s = compile_ours(name, images, args.severity)
    rounds = []
    for _ in range(args.rounds):
      ours = time_ours(fn, fn_args, args.repeats)
      ref, n = time_reference(name, images, args.severity,
                              args.reference_budget_s / args.rounds)
      rounds.append((ours / ref, ours, ref, n))
    rounds.sort()
    ratio, ours, ref, n = rounds[len(rounds) // 2]  # the median round
    ratios.append(ratio)
    print(f'{name:18s} {ours:10.1f} {ref:10.1f} {ratio:8.1f}x '
          f'{compile_s:9.1f} {n:5d}', flush=True)
  geo = float(np.exp(np.mean(np.log(ratios))))
  print(f'geometric mean speed-up: {geo:.1f}x; slowest: '
        f'{names[int(np.argmin(ratios))]} ({min(ratios):.2f}x)')


if __name__ == '__main__':
  main()
