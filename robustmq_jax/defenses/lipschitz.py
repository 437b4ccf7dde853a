"""Spectral norms by power iteration: matrices, kernels and conv operators.

The Lipschitz constant of a linear layer in the Euclidean norm is its
largest singular value. Power iteration estimates it from products with W
and W^T only, so it works where the matrix is never formed:

* `spectral_norm(w)`: an explicit matrix (a dense kernel, or a conv kernel
  reshaped to c_out x k*k*c_in, the surrogate DQ regularises).
* `conv_operator_norm(kernel, ...)`: the convolution itself as a linear map
  on inputs of a given shape (the exact Lipschitz constant of the layer;
  the transpose comes from `jax.linear_transpose`). For stride 1 it lies
  between the reshaped matrix's norm and sqrt(k*k) times it.

Every estimate is a lower bound that converges from below; we run a fixed
number of iterations inside `lax.fori_loop` (one compile per shape).
"""

import functools
from typing import Any, Callable

import jax
from jax import lax
import jax.numpy as jnp

from robustmq_jax.defenses.layers import apply_layer
from robustmq_jax.defenses.layers import kernel_matrix
from robustmq_jax.defenses.layers import WeightLayer

DEFAULT_ITERS = 50
_EPS = 1e-12


def _normalize(v: jax.Array) -> jax.Array:
  return v / (jnp.linalg.norm(v.reshape(-1)) + _EPS)


def operator_norm(key: jax.Array, fn: Callable[[jax.Array], jax.Array],
                  in_shape: tuple[int, ...], *, iters: int = DEFAULT_ITERS,
                  dtype: Any = jnp.float32) -> jax.Array:
  """Largest singular value of the linear map `fn` by power iteration.

  Iterates v <- normalize(A^T A v) from a random v and returns ||A v||.

  Args:
    key: PRNG key for the starting vector.
    fn: a linear function of one array of shape `in_shape`.
    in_shape: input shape of `fn`.
    iters: power iterations (static).
    dtype: input dtype.

  Returns:
    The estimate (float32 scalar), a lower bound of the true norm.
  """
  x0 = jax.ShapeDtypeStruct(in_shape, dtype)
  transpose = jax.linear_transpose(fn, x0)

  def step(_, v):
    (u,) = transpose(fn(v))
    return _normalize(u)

  v = _normalize(jax.random.normal(key, in_shape, dtype))
  v = lax.fori_loop(0, iters, step, v)
  return jnp.linalg.norm(fn(v).reshape(-1)).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=('iters',))
def spectral_norm(w: jax.Array, *, key: jax.Array | None = None,
                  iters: int = DEFAULT_ITERS) -> jax.Array:
  """Largest singular value of a 2-D matrix by power iteration.

  Args:
    w: matrix [m, n].
    key: PRNG key for the start vector (default: a fixed key).
    iters: power iterations (static).

  Returns:
    Float32 scalar, within 1% of ``jnp.linalg.norm(w, 2)`` after 50
    iterations unless the top two singular values are nearly equal.
  """
  key = jax.random.key(0) if key is None else key
  w = w.astype(jnp.float32)
  # Iterate on the smaller side: same top singular value, cheaper products.
  if w.shape[0] < w.shape[1]:
    w = w.T
  return operator_norm(key, lambda v: w @ v, (w.shape[1],), iters=iters)


def kernel_norm(kernel: jax.Array, layer: WeightLayer, *,
                key: jax.Array | None = None, iters: int = DEFAULT_ITERS
                ) -> jax.Array:
  """Spectral norm of a kernel reshaped to its (out x in) matrix."""
  return spectral_norm(kernel_matrix(kernel, layer.contracting), key=key,
                       iters=iters)


def conv_operator_norm(kernel: jax.Array, layer: WeightLayer, *,
                       key: jax.Array | None = None,
                       iters: int = DEFAULT_ITERS) -> jax.Array:
  """Norm of the conv layer as a linear map on one input of its shape.

  Args:
    kernel: HWIO kernel.
    layer: the conv layer (its recorded input shape, strides and padding).
    key: PRNG key (default: a fixed key).
    iters: power iterations.

  Returns:
    The operator norm estimate (float32 scalar).
  """
  key = jax.random.key(0) if key is None else key
  shape = (1,) + tuple(layer.input_shape[1:])
  return _operator_jit(layer, iters)(key, kernel.astype(jnp.float32), shape)


# One jitted power iteration per layer, so that the layer-wise search
# reuses it; bounded, and its compiled programs go with the runner's
# `jax.clear_caches()` between model/precision blocks.
@functools.lru_cache(maxsize=512)
def _operator_jit(layer: WeightLayer, iters: int):

  @functools.partial(jax.jit, static_argnums=(2,))
  def run(key, kernel, shape):
    return operator_norm(key, lambda x: apply_layer(layer, x, kernel), shape,
                         iters=iters)

  return run


def layer_norm(kernel: jax.Array, layer: WeightLayer, *, mode: str = 'matrix',
               key: jax.Array | None = None, iters: int = DEFAULT_ITERS
               ) -> jax.Array:
  """A layer's Lipschitz estimate: 'matrix' (reshaped kernel) or 'operator'.

  'operator' is the exact conv operator norm for convolutions; for dense
  layers both modes give the matrix norm.
  """
  if mode == 'operator' and layer.kind == 'conv':
    return conv_operator_norm(kernel, layer, key=key, iters=iters)
  return kernel_norm(kernel, layer, key=key, iters=iters)
