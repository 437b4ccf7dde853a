"""Random model variables without compiling the initializer.

`module.init` compiles the whole forward pass, which for ResNet-50 or ViT-B
costs more CPU time than the benchmark or test that needs the variables.
`he_normal_variables` reads the variable shapes with `jax.eval_shape` and
draws them in NumPy instead.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def he_normal_variables(module: nn.Module, image_size: int,
                        seed: int = 0) -> Any:
  """He-normal kernels, zero biases/means, unit scales/variances (NumPy).

  Args:
    module: a model taking [B, image_size, image_size, 3] images.
    image_size: input side.
    seed: NumPy seed.

  Returns:
    The variables tree (NumPy float32 leaves) of `module.init`.
  """
  shapes = jax.eval_shape(module.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, image_size, image_size, 3),
                                               jnp.float32))
  rng = np.random.default_rng(seed)

  def leaf(path, s):
    key = path[-1].key
    if key in ('var', 'scale'):
      return np.ones(s.shape, np.float32)
    if key in ('mean', 'bias') or len(s.shape) < 2:
      return np.zeros(s.shape, np.float32)
    fan_in = int(np.prod(s.shape[:-1]))
    return (rng.normal(size=s.shape) * np.sqrt(2.0 / fan_in)).astype(
        np.float32)

  return jax.tree_util.tree_map_with_path(leaf, shapes)
