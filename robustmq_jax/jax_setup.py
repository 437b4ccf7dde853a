"""JAX setup of a process, done before JAX creates its backends.

Two settings a user should not have to know about:

* the persistent compilation cache (`compilation_cache`): a rerun, into any
  workdir, loads what an earlier run compiled instead of compiling again;
* XLA:CPU's kernels (`select_cpu_kernels`): jax 0.10 sends convolutions,
  dots and reductions to YNNPACK by default, which is slower than XLA's
  Eigen kernels for our full-size models on CPU (ResNet-18 forward 0.83x vs
  0.96x of timm, ViT-S 0.59x vs 0.86x; benchmarks/forward.py) and, for
  convolutions, for the 32 x 32 convolutional twins too (ResNet-20 forward
  and input gradient 1.4-1.7x faster with Eigen convolutions;
  `configs/resnet18_w4.py:sample` 186-199 -> 148-160 s cold, rows
  identical; QAT smoke 1.1-1.4x the images/s; benchmarks/RESULTS.md). XLA
  reads `XLA_FLAGS` once, when it creates its first backend, so this must
  run before anything asks JAX for devices.
"""

import os
from typing import Iterable

from absl import logging
import jax
from jax._src import xla_bridge

from robustmq_jax import models as models_lib
from robustmq_jax.errors import UserError

YNN_FLAG = '--xla_cpu_experimental_ynn_fusion_type'
# The smallest input side for which every YNNPACK kernel is turned off.
EIGEN_MIN_IMAGE_SIZE = 224
# The flag's values: no YNNPACK fusion at all (full-size models), or the
# default less convolutions (32 x 32 runs with a convolutional model): dots
# and reductions stay on YNNPACK (in ResNet-20's input gradient, two YNN
# fusions are left of 26: the classifier's dot and the ReLU + global pool).
# A ViT-only 32 x 32 run keeps XLA's default: on Eigen the quickstart is
# slower (148 vs 134-138 s) and some rows move, and AQT's served int8 dots
# are 2.5x slower.
ALL_EIGEN = ''
EIGEN_CONVOLUTIONS = '-individual_convolution'


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


def cpu_kernels(models: Iterable[models_lib.ModelInfo]) -> str | None:
  """The YNN_FLAG value for a run of `models` on CPU, None for XLA's default.

  Args:
    models: the models the run evaluates or trains.
  """
  models = list(models)
  if any(m.image_size >= EIGEN_MIN_IMAGE_SIZE for m in models):
    return ALL_EIGEN
  if any(m.family != 'vit' for m in models):
    return EIGEN_CONVOLUTIONS
  return None


def select_cpu_kernels(models: Iterable[models_lib.ModelInfo]) -> bool:
  """Sets XLA:CPU's faster kernels for these models (`cpu_kernels`).

  Does nothing (returns False) when the models keep XLA's default, when JAX
  is restricted to other platforms, when the user already set the flag in
  XLA_FLAGS (theirs wins), or when JAX's backends already exist (too late;
  logged). The flag only concerns the CPU client, so it is harmless on a
  GPU or TPU host.

  Args:
    models: the models the run evaluates or trains.

  Returns:
    Whether the flag was added to XLA_FLAGS.
  """
  value = cpu_kernels(models)
  if value is None or not _uses_cpu():
    return False
  flags = os.environ.get('XLA_FLAGS', '')
  if YNN_FLAG in flags:
    return False
  if xla_bridge.backends_are_initialized():
    logging.warning('JAX backends already exist: %s=%s not applied (set it '
                    'in XLA_FLAGS yourself for faster CPU kernels).',
                    YNN_FLAG, value)
    return False
  os.environ['XLA_FLAGS'] = f'{flags} {YNN_FLAG}={value}'.strip()
  logging.info('XLA:CPU kernels: %s=%s (%s).', YNN_FLAG, value,
               'Eigen for convolutions' if value else 'no YNNPACK')
  return True
