"""Noise corruptions: gaussian, shot, impulse and speckle noise.

Each pixel and channel gets independent noise, as in the reference (NumPy's
global generator there; per-example hash streams here, see `rng`).
"""

import jax.numpy as jnp

from robustmq_jax.corruptions import rng
from robustmq_jax.corruptions.base import corruption


@corruption('gaussian_noise', family='noise')
def gaussian_noise(seed, x, p, static):
  """Additive Gaussian noise: clip(x + N(0, sigma^2))."""
  del static
  return x + p['sigma'] * rng.normal(seed, x.shape)


def _prepare_shot(table, h, w):
  del h, w
  f = dict(table.fields('shot_noise'))
  f['cdf'] = rng.poisson_cdf_table(f['rate'])  # [5, 256, k_max]
  return f, {}


@corruption('shot_noise', family='noise', prepare=_prepare_shot)
def shot_noise(seed, x, p, static):
  """Photon (Poisson) noise: clip(Poisson(x * rate) / rate).

  Exact for 8-bit images; see `rng.poisson_of_levels` for other inputs.
  """
  del static
  return rng.poisson_of_levels(seed, x, p['cdf']) / p['rate']


@corruption('impulse_noise', family='noise')
def impulse_noise(seed, x, p, static):
  """Salt-and-pepper noise (skimage `random_noise(mode='s&p')`).

  Each value is replaced with probability `amount`, by 1 or 0 with equal
  probability.
  """
  del static
  u = rng.uniform(rng.substream(seed, 0), x.shape)
  salt = rng.uniform(rng.substream(seed, 1), x.shape) < 0.5
  return jnp.where(u < p['amount'], salt.astype(x.dtype), x)


@corruption('speckle_noise', family='noise')
def speckle_noise(seed, x, p, static):
  """Multiplicative Gaussian noise: clip(x + x * N(0, sigma^2))."""
  del static
  return x + x * p['sigma'] * rng.normal(seed, x.shape)
