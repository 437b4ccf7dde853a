"""Shared fixtures of the corruption tests: sample images and compiled
corruption programs cached per process (compiling dominates on CPUs, so the
test files share one program per corruption)."""

import functools

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import jax.numpy as jnp
import numpy as np

from robustmq_jax import corruptions

N = 8  # one image per fake device (tests/conftest.py)


@functools.cache
def sample_images(n: int = N) -> np.ndarray:
  """The first n test images of the embedded 32x32 sample (uint8)."""
  from robustmq_jax.data.sample import SampleDataset  # pylint: disable=g-import-not-at-top
  return SampleDataset('test').images(np.arange(n))


@functools.cache
def photos(n: int = 3, side: int = 224) -> np.ndarray:
  """Centre crops of scikit-image's photographs (uint8)."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  srcs = [skimage.data.astronaut(), skimage.data.chelsea(),
          skimage.data.coffee(), skimage.data.rocket()]
  out = []
  for img in srcs[:n]:
    h, w = img.shape[:2]
    out.append(img[(h - side) // 2:(h + side) // 2,
                   (w - side) // 2:(w + side) // 2])
  return np.stack(out)


@functools.cache
def sharded_fn(name: str):
  """jit(apply) with the batch sharded over all devices; severity traced."""
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ('data',))
  data = NamedSharding(mesh, P('data'))
  return jax.jit(
      lambda keys, x, s: corruptions.apply(name, keys, x, severity=s),
      in_shardings=(data, data, NamedSharding(mesh, P())),
      out_shardings=data)


@functools.cache
def single_fn(name: str, table: str | None = None):
  """jit(apply) on one device; severity traced."""
  return jax.jit(lambda keys, x, s: corruptions.apply(
      name, keys, x, severity=s, table=table))


def keys(seed: int, ids) -> jax.Array:
  return corruptions.keys_for_ids(jax.random.key(seed), jnp.asarray(ids))


def to_float(images_u8) -> jax.Array:
  return jnp.asarray(images_u8, jnp.float32) / 255.0


def to_u8(x) -> np.ndarray:
  """Our float output as the datasets store it (np.uint8 truncation)."""
  return np.floor(np.clip(np.asarray(x, np.float64), 0, 1) * 255 + 1e-3
                  ).astype(np.uint8)


def psnr(a, b, peak: float = 1.0) -> float:
  """Mean PSNR over the batch."""
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  mse = np.mean((a - b)**2, axis=tuple(range(1, a.ndim)))
  return float(np.mean(10 * np.log10(peak**2 / np.maximum(mse, 1e-12))))
