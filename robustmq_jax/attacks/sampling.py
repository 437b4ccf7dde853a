"""Per-example PRNG keys and random starting points inside norm balls.

Attacks accept either one key (split into one key per example) or a batch of
per-example keys [B]. The runner passes ``fold_in(key, example_id)`` per
example so an example's random start does not depend on the batch it is in,
the batch size or the number of devices.
"""

import jax
import jax.numpy as jnp

from robustmq_jax.attacks import projections
from robustmq_jax.errors import invalid


def _is_typed_key(key: jax.Array) -> bool:
  return jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)


def example_keys(key: jax.Array, n: int) -> jax.Array:
  """Returns n per-example keys: `key` if it already is a batch, else split.

  Args:
    key: a typed key (shape ()) or raw uint32 key (shape (2,)), or a batch
      of them (shape (n,) / (n, 2)).
    n: batch size.
  """
  batched = key.ndim == (1 if _is_typed_key(key) else 2)
  if batched:
    if key.shape[0] != n:
      raise ValueError(f'got {key.shape[0]} per-example keys for {n} '
                       'examples')
    return key
  return jax.random.split(key, n)


def fold(keys: jax.Array, data) -> jax.Array:
  """fold_in(data) applied to every per-example key."""
  return jax.vmap(lambda k: jax.random.fold_in(k, data))(keys)


def uniform(keys: jax.Array, shape, minval=0.0, maxval=1.0) -> jax.Array:
  """One uniform draw of `shape` per key: [B, *shape]."""
  return jax.vmap(
      lambda k: jax.random.uniform(k, shape, jnp.float32, minval, maxval))(keys)


def normal(keys: jax.Array, shape) -> jax.Array:
  return jax.vmap(lambda k: jax.random.normal(k, shape, jnp.float32))(keys)


def rademacher(keys: jax.Array, shape) -> jax.Array:
  """Random signs in {-1, +1} (float32)."""
  return jax.vmap(lambda k: jax.random.rademacher(k, shape, jnp.float32))(keys)


def random_start(keys: jax.Array, x: jax.Array, eps, norm: str) -> jax.Array:
  """A random perturbation inside the `norm` ball of radius `eps`.

  linf: uniform in the cube (Madry et al.); l2: Gaussian direction with a
  radius uniform in [0, eps] (as torchattacks' PGDL2); l1: uniform in the
  L1 ball (Dirichlet construction, as IBM ART's ``random_sphere``).
  """
  shape = x.shape[1:]
  e = projections.per_example(eps, x)
  if norm == 'linf':
    return e * uniform(keys, shape, -1.0, 1.0)
  if norm == 'l2':
    k = jax.vmap(jax.random.split)(keys)
    k1, k2 = k[:, 0], k[:, 1]
    d = projections.normalize(normal(k1, shape), 'l2')
    r = uniform(k2, ())
    return d * projections.per_example(r, x) * e
  if norm == 'l1':
    k = jax.vmap(lambda k: jax.random.split(k, 3))(keys)
    k1, k2, k3 = k[:, 0], k[:, 1], k[:, 2]
    g = jax.vmap(lambda k: jax.random.exponential(k, shape))(k1)
    extra = jax.vmap(lambda k: jax.random.exponential(k, ()))(k2)
    total = jnp.sum(projections.flat(g), axis=1) + extra
    signs = rademacher(k3, shape)
    return e * signs * g / projections.per_example(total, x)
  raise invalid('norm', norm, projections.NORMS)
