"""Defensive Quantization's orthogonality penalty (Lin, Gan, Han, ICLR 2019).

DQ keeps every layer close to non-expansive while it is trained with
quantization, by adding to the loss

  (beta / 2) * sum_l || W_l^T W_l - I ||_F^2

over every convolution (the kernel reshaped to a c_out x (k * k * c_in)
matrix) and every dense layer (arXiv 1904.08444; beta = 3e-4 or 6e-4 in the
paper). A matrix with orthonormal rows or columns has spectral norm 1, so the
penalty bounds each layer's Lipschitz constant.

Which Gram matrix. For an m x n matrix W (outputs x inputs) with singular
values s_1..s_r, r = min(m, n):

  || W^T W - I_n ||_F^2 = sum_i (s_i^2 - 1)^2 + (n - r)
  || W W^T - I_m ||_F^2 = sum_i (s_i^2 - 1)^2 + (m - r)

The two forms differ by a constant, so they have the same gradient and drive
the same singular values to 1; only the larger Gram matrix can never reach
the identity (its floor is |m - n|), and it costs more to form. Our default,
``form='auto'``, uses the smaller Gram matrix, whose minimum is 0: W^T W for
tall matrices (m >= n) and W W^T for wide ones, e.g. most convolutions,
whose k * k * c_in inputs outnumber their c_out outputs. ``'wtw'`` and
``'wwt'`` force one form (the paper writes W^T W).
"""

from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp

from robustmq_jax.defenses.layers import get_kernel
from robustmq_jax.defenses.layers import kernel_matrix
from robustmq_jax.defenses.layers import WeightLayer
from robustmq_jax.errors import invalid

FORMS = ('auto', 'wtw', 'wwt')
# The paper's two settings of beta.
PAPER_BETAS = (3e-4, 6e-4)


def gram_deviation(w: jax.Array, form: str = 'auto') -> jax.Array:
  """|| G - I ||_F^2 for the Gram matrix G of a 2-D matrix `w` (out x in).

  Args:
    w: matrix [m, n] (rows are outputs).
    form: 'wtw' (G = W^T W, n x n), 'wwt' (G = W W^T, m x m) or 'auto' (the
      smaller of the two).

  Returns:
    A float32 scalar.
  """
  if form not in FORMS:
    raise invalid('form', form, FORMS)
  w = w.astype(jnp.float32)
  m, n = w.shape
  if form == 'wwt' or (form == 'auto' and m < n):
    g = w @ w.T
  else:
    g = w.T @ w
  eye = jnp.eye(g.shape[0], dtype=g.dtype)
  return jnp.sum(jnp.square(g - eye))


def orthogonality_penalty(params: Any, layers: Iterable[WeightLayer], *,
                          beta: float, form: str = 'auto') -> jax.Array:
  """(beta / 2) * sum over `layers` of `gram_deviation` of each kernel.

  Args:
    params: the 'params' collection.
    layers: the kernels to penalise (from `layers.weight_layers`).
    beta: the penalty weight (traced; jit-friendly).
    form: see `gram_deviation`.

  Returns:
    A float32 scalar.
  """
  total = jnp.zeros((), jnp.float32)
  for layer in layers:
    w = kernel_matrix(get_kernel(params, layer.path), layer.contracting)
    total = total + gram_deviation(w, form)
  return 0.5 * jnp.asarray(beta, jnp.float32) * total


def make_penalty(layers: dict[str, WeightLayer], *, beta: float,
                 form: str = 'auto', exclude: Iterable[str] = ()
                 ) -> Callable[[Any], jax.Array]:
  """A `robustmq_jax.training.fit` penalty hook: params -> DQ penalty.

  Args:
    layers: from `layers.weight_layers` (every conv and dense kernel).
    beta: the penalty weight.
    form: see `gram_deviation`.
    exclude: Role paths to leave unpenalised.

  Returns:
    The hook.
  """
  if form not in FORMS:
    raise invalid('config.quant.dq.form', form, FORMS)
  chosen = [l for p, l in layers.items() if p not in set(exclude)]
  return lambda params: orthogonality_penalty(params, chosen, beta=beta,
                                              form=form)


def per_layer_deviation(params: Any, layers: dict[str, WeightLayer],
                        form: str = 'auto') -> dict[str, float]:
  """Role path -> || G - I ||_F^2 / size(G): a per-layer report metric."""
  out = {}
  for path, layer in layers.items():
    w = kernel_matrix(get_kernel(params, path), layer.contracting)
    m, n = w.shape
    size = min(m, n) if form == 'auto' else (n if form == 'wtw' else m)
    out[path] = float(gram_deviation(w, form)) / size**2
  return out
