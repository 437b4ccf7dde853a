"""Library versions recorded with every result row."""

import functools
import importlib.metadata


@functools.cache
def versions() -> dict[str, str]:
  out = {}
  for pkg in ('robustmq_jax', 'jax', 'jaxlib', 'flax', 'aqtp', 'numpy',
              'pillow', 'opencv-python-headless', 'dm-pix'):
    try:
      out[pkg] = importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
      pass
  return out
