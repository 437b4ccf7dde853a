"""Input normalisation folded into the models.

Models take float images in [0, 1] and normalise them internally, so attack
budgets and corruptions are expressed in pixel space whatever the checkpoint
was trained with.
"""

from typing import Sequence

import jax
import jax.numpy as jnp

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Google ViT / big_vision checkpoints and timm AugReg ViTs: inputs in [-1, 1].
HALF_MEAN = (0.5, 0.5, 0.5)
HALF_STD = (0.5, 0.5, 0.5)


def normalize(images: jax.Array, mean: Sequence[float],
              std: Sequence[float]) -> jax.Array:
  """Maps [0, 1] images to ``(images - mean) / std`` per channel (last axis).

  Args:
    images: float array [..., C].
    mean: per-channel mean, length C.
    std: per-channel standard deviation, length C.

  Returns:
    The normalised images, same dtype as `images`.
  """
  mean = jnp.asarray(mean, images.dtype)
  inv_std = 1.0 / jnp.asarray(std, images.dtype)
  return (images - mean) * inv_std
