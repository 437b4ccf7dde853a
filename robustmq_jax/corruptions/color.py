"""scikit-image's RGB <-> HSV conversions (the brightness and saturate
corruptions use them), including its tie-breaking when two channels share
the maximum (the later channel wins: blue over green over red)."""

import jax
import jax.numpy as jnp


def rgb_to_hsv(rgb: jax.Array) -> jax.Array:
  """skimage.color.rgb2hsv for [..., 3] floats in [0, 1]."""
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  v = jnp.max(rgb, axis=-1)
  delta = v - jnp.min(rgb, axis=-1)
  safe = jnp.where(delta == 0, 1.0, delta)
  s = jnp.where(delta == 0, 0.0, delta / jnp.where(v == 0, 1.0, v))
  h = jnp.where(r == v, (g - b) / safe, 0.0)
  h = jnp.where(g == v, 2.0 + (b - r) / safe, h)
  h = jnp.where(b == v, 4.0 + (r - g) / safe, h)
  h = jnp.mod(h / 6.0, 1.0)
  h = jnp.where(delta == 0, 0.0, h)
  return jnp.stack([h, s, v], axis=-1)


def hsv_to_rgb(hsv: jax.Array) -> jax.Array:
  """skimage.color.hsv2rgb for [..., 3] floats."""
  h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  hi = jnp.floor(h * 6)
  f = h * 6 - hi
  p = v * (1 - s)
  q = v * (1 - f * s)
  t = v * (1 - (1 - f) * s)
  hi = jnp.mod(hi.astype(jnp.int32), 6)
  choices = jnp.stack([
      jnp.stack([v, t, p], -1), jnp.stack([q, v, p], -1),
      jnp.stack([p, v, t], -1), jnp.stack([p, q, v], -1),
      jnp.stack([t, p, v], -1), jnp.stack([v, p, q], -1)])
  return jnp.take_along_axis(choices, hi[None, ..., None], axis=0)[0]
