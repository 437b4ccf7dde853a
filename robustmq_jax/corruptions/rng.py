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


def bits(seed: jax.Array, shape) -> jax.Array:
  """uint32 hash bits of the given shape for one example's seed [2]."""
  n = int(np.prod(shape)) if len(shape) else 1
  c = lax.iota(jnp.uint32, n)
  h = _fmix(c * _GOLDEN + seed[0])
  h = _fmix(h ^ seed[1])
  return h.reshape(shape)


def uniform(seed: jax.Array, shape, minval=0.0, maxval=1.0) -> jax.Array:
  """float32 uniform in [minval, maxval) (24-bit resolution)."""
  u = (bits(seed, shape) >> 8).astype(jnp.float32) * np.float32(2.0**-24)
  return minval + u * (maxval - minval)


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


def poisson(seed: jax.Array, rate: jax.Array) -> jax.Array:
  """Poisson(rate) samples as float32, elementwise, for one example.

  The same two methods as NumPy's legacy generator: for rate < 10, inversion
  by sequential search (NumPy multiplies uniforms; same distribution); for
  rate >= 10, Hoermann's transformed rejection (PTRS), looping until every
  element is accepted.
  """
  rate = rate.astype(jnp.float32)
  shape = rate.shape
  small = rate < 10.0

  # Inversion: k = min{k : u <= F(k)}.
  u = _open_uniform(substream(seed, 0), shape)
  lam = jnp.where(small, rate, 0.0)
  p0 = jnp.exp(-lam)

  def inv_cond(s):
    k, p, f, it = s
    return jnp.logical_and(it < 64, jnp.any(small & (u > f)))

  def inv_body(s):
    k, p, f, it = s
    go = small & (u > f)
    k1 = k + 1.0
    p = jnp.where(go, p * lam / k1, p)
    return (jnp.where(go, k1, k), p, jnp.where(go, f + p, f), it + 1)

  k_small, _, _, _ = lax.while_loop(
      inv_cond, inv_body, (jnp.zeros(shape), p0, p0, jnp.int32(0)))

  # PTRS for large rates.
  lam = jnp.where(small, 10.0, rate)
  slam = jnp.sqrt(lam)
  loglam = jnp.log(lam)
  b = 0.931 + 2.53 * slam
  a = -0.059 + 0.02483 * b
  log_invalpha = jnp.log(1.1239 + 1.1328 / (b - 3.4))
  vr = 0.9277 - 3.6224 / (b - 2.0)

  def rej_cond(s):
    _, done, it = s
    return jnp.logical_and(it < 1000, jnp.logical_not(jnp.all(done)))

  def rej_body(s):
    k_out, done, it = s
    uu = _open_uniform(substream(seed, 2 * it + 1), shape) - 0.5
    v = _open_uniform(substream(seed, 2 * it + 2), shape)
    us = 0.5 - jnp.abs(uu)
    k = jnp.floor((2.0 * a / us + b) * uu + lam + 0.43)
    quick = (us >= 0.07) & (v <= vr)
    reject = (k < 0) | ((us < 0.013) & (v > us))
    kk = jnp.maximum(k, 0.0)
    slow = (jnp.log(v) + log_invalpha - jnp.log(a / (us * us) + b)
            <= -lam + kk * loglam - lax.lgamma(kk + 1.0))
    accept = quick | (~reject & slow)
    new = accept & ~done
    return jnp.where(new, k, k_out), done | accept, it + 1

  k_large, _, _ = lax.while_loop(
      rej_cond, rej_body, (jnp.zeros(shape), small, jnp.int32(0)))
  return jnp.where(small, k_small, k_large)
