"""Per-example random streams for the corruptions.

Keys: every example gets its own threefry key, `fold_in(key, example_id)`, so
its corruption depends only on the key and its id (not on the batch size, its
position in the batch or the device count). From that key we draw two 32-bit
words once; the per-pixel fields (noise, snow and spatter layers, elastic
fields, glass-blur offsets, fog plasma) then come from a counter-based hash of
(words, stream, pixel index): two rounds of the murmur3 32-bit finaliser.
Threefry per pixel costs about 80 ns per value on a CPU core (slower than the
NumPy reference it replaces); the hash is about 20x cheaper and is equally
deterministic on every backend. Its statistics are far beyond what image
corruptions need (it is a bijection of the counter for each key).
"""

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

_GOLDEN = np.uint32(0x9E3779B9)


def _fmix(h: jax.Array) -> jax.Array:
  """murmur3's 32-bit finaliser (a bijection with full avalanche)."""
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def example_keys(key: jax.Array, batch: int) -> jax.Array:
  """Per-example keys from a single key or a batch of keys.

  Args:
    key: one PRNG key (typed `jax.random.key` or raw uint32[2]); example i of
      the batch then uses `fold_in(key, i)`. Or `batch` keys (shape [B] typed
      or [B, 2] raw), used as they are; pass `keys_for_ids(key, ids)` to make
      results independent of batch composition.
    batch: the batch size.

  Returns:
    Typed keys [batch].
  """
  if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.wrap_key_data(jnp.asarray(key, jnp.uint32))
  if key.ndim == 0:
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(
        jnp.arange(batch, dtype=jnp.uint32))
  if key.shape != (batch,):
    raise ValueError(f'key has shape {key.shape}; expected one key or '
                     f'{batch} keys (one per image).')
  return key


def keys_for_ids(key: jax.Array, ids: jax.Array) -> jax.Array:
  """`fold_in(key, id)` for every example id: batch-independent keys."""
  if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.wrap_key_data(jnp.asarray(key, jnp.uint32))
  ids = jnp.asarray(ids).astype(jnp.uint32)  # ids < 2**32.
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(ids)


def seed_words(keys: jax.Array) -> jax.Array:
  """uint32 [B, 2]: the hash seed of every example."""
  return jax.vmap(lambda k: jax.random.bits(k, (2,), jnp.uint32))(keys)


def substream(seed: jax.Array, stream: int | jax.Array) -> jax.Array:
  """An independent seed [2] for stream number `stream` of one example."""
  s = jnp.asarray(stream).astype(jnp.uint32)
  a = _fmix(seed[0] ^ (s * _GOLDEN + jnp.uint32(0x7F4A7C15)))
  b = _fmix(seed[1] + _fmix(a ^ s))
  return jnp.stack([a, b])


def _hash(seed: jax.Array, counters: jax.Array) -> jax.Array:
  h = _fmix(counters * _GOLDEN + seed[0])
  return _fmix(h ^ seed[1])


def bits(seed: jax.Array, shape) -> jax.Array:
  """uint32 hash bits of the given shape for one example's seed [2]."""
  n = int(np.prod(shape)) if len(shape) else 1
  return _hash(seed, lax.iota(jnp.uint32, n)).reshape(shape)


def _to_unit(b: jax.Array) -> jax.Array:
  return (b >> 8).astype(jnp.float32) * np.float32(2.0**-24)


def uniform(seed: jax.Array, shape, minval=0.0, maxval=1.0) -> jax.Array:
  """float32 uniform in [minval, maxval) (24-bit resolution)."""
  return minval + _to_unit(bits(seed, shape)) * (maxval - minval)


def uniform_grid(seed: jax.Array, side: int, stride: int, minval=0.0,
                 maxval=1.0) -> jax.Array:
  """`uniform(seed, (side, side), ...)[::stride, ::stride]`, computing only
  those values (the counter of a value is its flat index)."""
  i = lax.iota(jnp.uint32, side // stride) * np.uint32(stride)
  counters = i[:, None] * np.uint32(side) + i[None, :]
  return minval + _to_unit(_hash(seed, counters)) * (maxval - minval)


def _open_uniform(seed, shape):
  """float32 uniform in (0, 1), never 0 or 1."""
  return ((bits(seed, shape) >> 8).astype(jnp.float32) + 0.5) * np.float32(
      2.0**-24)


def normal(seed: jax.Array, shape) -> jax.Array:
  """Standard normal float32 by inverse CDF (tails cut at about 5.4 sigma)."""
  u = _open_uniform(seed, shape)
  return np.float32(np.sqrt(2.0)) * lax.erf_inv(2.0 * u - 1.0)


def randint(seed: jax.Array, shape, minval, maxval) -> jax.Array:
  """int32 uniform in [minval, maxval) (NumPy `randint` convention)."""
  minval = jnp.asarray(minval, jnp.int32)
  span = jnp.asarray(maxval, jnp.int32) - minval
  u = uniform(seed, shape)
  r = jnp.floor(u * span.astype(jnp.float32)).astype(jnp.int32)
  return minval + jnp.minimum(r, span - 1)


def poisson_cdf_table(rates, levels: int = 255) -> np.ndarray:
  """Host-side Poisson CDFs for `poisson_of_levels`, in float64 -> float32.

  Args:
    rates: the possible values of `rate` (e.g. the 5 severities').
    levels: grid of x.

  Returns:
    float32 [len(rates), levels + 1, k_max]: CDF of Poisson((l / levels) *
    rate) at 0..k_max-1, with k_max = ceil(max rate + 10 sqrt(max rate) + 10).
  """
  from scipy import stats  # pylint: disable=g-import-not-at-top
  rates = np.asarray(rates, np.float64)
  top = float(rates.max())
  k_max = int(np.ceil(top + 10.0 * np.sqrt(top) + 10.0))
  lam = np.arange(levels + 1)[None, :, None] / levels * rates[:, None, None]
  k = np.arange(k_max)[None, None, :]
  return stats.poisson.cdf(k, lam).astype(np.float32)


def poisson_of_levels(seed: jax.Array, x: jax.Array, cdf: jax.Array, *,
                      levels: int = 255) -> jax.Array:
  """Poisson(x * rate) for x in [0, 1], by table inversion.

  Images come from uint8, so x * levels takes at most levels + 1 values; the
  CDF of each rate (l / levels) * rate is tabulated on the host
  (`poisson_cdf_table`, float64, so every backend and jit / eager draw the
  same samples) and inverted with a binary search per value: exact, and
  about 20x faster on a CPU than rejection sampling run until every pixel
  accepts. A value between two levels is first rounded to one of them at
  random (up with probability equal to its fractional part), which keeps the
  mean exactly x * rate and adds at most rate^2 / (4 levels^2) to the
  variance (0.014 at rate 60).

  Args:
    seed: the example's seed [2].
    x: values in [0, 1].
    cdf: float32 [levels + 1, k_max], one rate's table.
    levels: grid of x (255 for 8-bit images).

  Returns:
    float32 counts, shape of x.
  """
  k_max = cdf.shape[-1]
  cdf = cdf.reshape(-1)
  scaled = jnp.clip(x, 0.0, 1.0) * levels
  low = jnp.floor(scaled)
  frac = scaled - low
  frac = jnp.where(frac < 1e-4, 0.0, jnp.where(frac > 1 - 1e-4, 1.0, frac))
  up = uniform(substream(seed, 1), x.shape) < frac
  level = jnp.minimum(low + up, levels).astype(jnp.int32)
  u = _open_uniform(substream(seed, 0), x.shape)
  base = level * k_max
  bits_needed = int(np.ceil(np.log2(k_max + 1)))

  # k = #{j : cdf[j] < u}, found bit by bit, one gather per bit. A loop
  # (rather than unrolled steps) keeps XLA from fusing the dependent gathers
  # into kernels that recompute the earlier steps.
  def step(i, k):
    cand = k + (1 << (bits_needed - 1 - i))
    below = cdf[base + jnp.minimum(cand, k_max) - 1] < u
    return jnp.where(below & (cand <= k_max), cand, k)

  k = lax.fori_loop(0, bits_needed, step, jnp.zeros(x.shape, jnp.int32))
  return jnp.minimum(k, k_max - 1).astype(jnp.float32)
