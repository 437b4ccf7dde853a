"""The batching contract shared by every corruption.

A corruption is written for one example: ``impl(seed, image, p, static)``
with `seed` the example's uint32[2] hash seed (see `rng`), `image` float32
HWC in [0, 1], `p` the parameters of the requested severity (JAX scalars or
arrays, traced when the severity is) and `static` Python/NumPy constants that
fix shapes. `corruption(...)` turns it into the public batched function
``fn(key, images, *, severity, table=None)``.
"""

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from robustmq_jax.corruptions import params as params_lib
from robustmq_jax.corruptions import rng
from robustmq_jax.errors import invalid

# prepare(table, height, width) -> (per-severity arrays [5, ...], static).
Prepare = Callable[[params_lib.Table, int, int],
                   tuple[dict[str, np.ndarray], dict[str, Any]]]


@dataclasses.dataclass(frozen=True)
class Spec:
  """A registered corruption.

  Attributes:
    name: canonical name ('gaussian_noise', ...).
    impl: the per-example function.
    prepare: builds per-severity arrays and static constants for a table and
      image size (host side, cached).
    random: False when the output depends on the image and severity only.
    family: 'noise', 'blur', 'weather' or 'digital'.
    cpu_chunk: on a single CPU device, corrupt this many images at a time
      (a `lax.map` over chunks) instead of the whole batch at once; 0 = the
      whole batch (`vmap`), as on accelerators. Chunks keep the
      intermediates of multi-pass kernels (FFTs, tap cascades, Canny) in
      the CPU's caches; single-pass kernels are faster batched. Only set
      where the result is the same: bitwise, or up to one float32
      rounding of a final elementwise blend (XLA:CPU's
      vectorised loops round some elements with fused multiply-adds
      depending on how the array is split between threads, so even a
      batched elementwise result is only reproducible to that).
    batched: optional ``batched(seed, image, p, static) -> draws``, run for
      the whole batch (`vmap`) before `impl`, which then receives `draws`
      in place of the seed. For float work whose rounding depends on the
      batch shape (matrix products, transcendental functions), so that
      only the rest (e.g. integer image operations) runs in chunks.
  """
  name: str
  impl: Callable[..., jax.Array]
  prepare: Prepare
  random: bool
  family: str
  cpu_chunk: int = 0
  batched: Callable[..., Any] | None = None


SPECS: dict[str, Spec] = {}


def default_prepare(name: str) -> Prepare:
  def prepare(table, h, w):
    del h, w
    return table.fields(name), {}
  return prepare


@functools.lru_cache(maxsize=None)
def prepared(name: str, table_name: str, h: int, w: int):
  spec = SPECS[name]
  per_sev, static = spec.prepare(params_lib.TABLES[table_name], h, w)
  return per_sev, static


def check_severity(severity) -> jax.Array:
  """A concrete severity must be an integer in 1..5; a traced one is clipped."""
  if isinstance(severity, jax.core.Tracer):
    return jnp.clip(jnp.asarray(severity, jnp.int32), 1, 5)
  s = np.asarray(severity)
  if s.shape or not np.isfinite(s) or s != np.round(s) or not 1 <= s <= 5:
    raise invalid('severity', severity, 'an integer from 1 to 5')
  return jnp.int32(int(s))


def to_float(images: jax.Array) -> jax.Array:
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise invalid('images.dtype', str(images.dtype),
                  'a float type (values in [0, 1]) or uint8')
  return images.astype(jnp.float32)


def from_float(x: jax.Array, dtype) -> jax.Array:
  """Back to the input dtype; uint8 truncates like the datasets' np.uint8."""
  if dtype == jnp.uint8:
    # The epsilon absorbs float32 error on exact values (e.g. 50.99998).
    return jnp.floor(x * 255.0 + 1e-3).astype(jnp.uint8)
  return x.astype(dtype)


def run(spec: Spec, key, images, severity, table) -> jax.Array:
  """Applies `spec` to a batch; see `corruption` for the arguments."""
  images = jnp.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise invalid('images.shape', tuple(images.shape),
                  'an RGB batch [N, H, W, 3]')
  dtype = images.dtype
  x = to_float(images)
  b, h, w, _ = x.shape
  table = params_lib.get_table(table, h)
  sev = check_severity(severity)
  per_sev, static = prepared(spec.name, table.name, h, w)
  p = {k: jnp.asarray(v)[sev - 1] for k, v in per_sev.items()}
  if spec.random:
    if key is None:
      raise invalid('key', None, f'a PRNG key: {spec.name} is random')
    seeds = rng.seed_words(rng.example_keys(key, b))
  else:
    seeds = jnp.zeros((b, 2), jnp.uint32)
  if spec.batched is not None:
    seeds = jax.vmap(lambda s, xi: spec.batched(s, xi, p, static))(seeds, x)
  one = lambda s, xi: spec.impl(s, xi, p, static)
  if chunked(spec, b):
    out = jax.lax.map(lambda a: one(*a), (seeds, x),
                      batch_size=spec.cpu_chunk)
  else:
    out = jax.vmap(one)(seeds, x)
  return from_float(jnp.clip(out, 0.0, 1.0), dtype)


def chunked(spec: Spec, batch: int) -> bool:
  """Whether `run` corrupts the batch in chunks (see `Spec.cpu_chunk`).

  Only on a lone CPU device: with several devices the batch is sharded and
  a loop over it would gather it onto every device.
  """
  return (0 < spec.cpu_chunk < batch and jax.default_backend() == 'cpu'
          and jax.device_count() == 1)


_ARGS_DOC = """
  Args:
    key: a PRNG key for the batch (example i uses `fold_in(key, i)`), or one
      key per image ([N] typed or [N, 2] raw), e.g. `keys_for_ids(key, ids)`
      so that results do not depend on batch size or device count. Ignored by
      the deterministic corruptions (may be None).
    images: [N, H, W, 3] floats in [0, 1] (any float dtype) or uint8.
    severity: 1..5; a Python int or a traced int32 scalar.
    table: '224', '64', '32', or None / 'auto' to pick from the image side.

  Returns:
    The corrupted batch: same shape and dtype, values in [0, 1] (uint8 output
    is truncated, as the released datasets were).
"""


def corruption(name: str, *, family: str, random: bool = True,
               prepare: Prepare | None = None, cpu_chunk: int = 0,
               batched: Callable[..., Any] | None = None):
  """Registers a per-example `impl` and returns the public batched function."""
  def deco(impl):
    spec = Spec(name, impl, prepare or default_prepare(name), random, family,
                cpu_chunk, batched)
    SPECS[name] = spec

    def public(key, images, *, severity, table=None):
      return run(spec, key, images, severity, table)

    public.__name__ = public.__qualname__ = name
    public.__doc__ = (impl.__doc__ or '').rstrip() + '\n' + _ARGS_DOC
    public.spec = spec
    return public
  return deco
