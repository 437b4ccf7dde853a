"""JAX setup of a process, done before JAX creates its backends.

Two settings a user should not have to know about:

* the persistent compilation cache (`compilation_cache`): a rerun, into any
  workdir, loads what an earlier run compiled instead of compiling again;
* XLA:CPU's kernels for 224 x 224 models (`select_cpu_kernels`): jax 0.10
  sends convolutions and dots to YNNPACK by default, which is slower than
  XLA's Eigen kernels for our full-size models on CPU (ResNet-18 forward
  0.83x vs 0.96x of timm, ViT-S 0.59x vs 0.86x; benchmarks/forward.py). XLA
  reads `XLA_FLAGS` once, when it creates its first backend, so this must
  run before anything asks JAX for devices.
"""

import os
from typing import Iterable

from absl import logging
import jax
from jax._src import xla_bridge

from robustmq_jax.errors import UserError

YNN_FLAG = '--xla_cpu_experimental_ynn_fusion_type'
# The smallest input side for which the Eigen kernels are chosen: the
# measured gain is at 224; the 32 x 32 sample twins keep XLA's default.
EIGEN_MIN_IMAGE_SIZE = 224


def compilation_cache(value: str) -> str | None:
  """Points JAX's persistent compilation cache at a folder; returns it.

  Args:
    value: 'auto' ($XDG_CACHE_HOME or ~/.cache, then /robustmq_jax/xla), a
      folder, or 'off'. An explicit JAX_COMPILATION_CACHE_DIR in the
      environment wins (None is returned and nothing is changed).

  Every program is cached, however quickly it compiles: the quickstart has
  two dozen that compile in under half a second each, and caching them
  too made its rerun 12 % faster (66 entries instead of 42, 9 MB in all;
  benchmarks/RESULTS.md, "Quickstart with the persistent compilation
  cache").
  """
  if value == 'off' or os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return None
  if value == 'auto':
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(
        os.path.expanduser('~'), '.cache')
    value = os.path.join(base, 'robustmq_jax', 'xla')
  try:
    os.makedirs(value, exist_ok=True)
  except OSError as e:
    raise UserError(f'--compilation_cache={value!r} cannot be created '
                    f'({e.strerror}); allowed: a writable folder, auto or '
                    'off.') from None
  jax.config.update('jax_compilation_cache_dir', value)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  return value


def _uses_cpu() -> bool:
  platforms = os.environ.get('JAX_PLATFORMS') or jax.config.jax_platforms
  return not platforms or 'cpu' in platforms.split(',')


def select_cpu_kernels(image_sizes: Iterable[int]) -> bool:
  """Turns YNNPACK off for XLA:CPU when a full-size model will run.

  Does nothing (returns False) when every model is smaller than
  EIGEN_MIN_IMAGE_SIZE, when JAX is restricted to other platforms, when the
  user already set the flag in XLA_FLAGS (theirs wins), or when JAX's
  backends already exist (too late; logged). The flag only concerns the CPU
  client, so it is harmless on a GPU or TPU host.

  Args:
    image_sizes: input sides of the models the run evaluates.

  Returns:
    Whether the flag was added to XLA_FLAGS.
  """
  if max(image_sizes, default=0) < EIGEN_MIN_IMAGE_SIZE or not _uses_cpu():
    return False
  flags = os.environ.get('XLA_FLAGS', '')
  if YNN_FLAG in flags:
    return False
  if xla_bridge.backends_are_initialized():
    logging.warning('JAX backends already exist: %s= not applied (set it in '
                    'XLA_FLAGS yourself for faster 224x224 CPU kernels).',
                    YNN_FLAG)
    return False
  os.environ['XLA_FLAGS'] = f'{flags} {YNN_FLAG}='.strip()
  logging.info('XLA:CPU uses its Eigen kernels (%s=) for 224x224 models.',
               YNN_FLAG)
  return True
