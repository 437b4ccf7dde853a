"""Random-weight models and inputs shared by the benchmark scripts.

Imported as a sibling module (`import random_models`), like `timing`.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from robustmq_jax import models
from robustmq_jax import quant
from robustmq_jax.models import random_init


@dataclasses.dataclass(frozen=True)
class RandomModel:
  """A registered model with He-normal weights and one random batch."""
  name: str
  num_classes: int
  module: nn.Module
  variables: Any
  images: np.ndarray  # uint8 [batch, size, size, 3]
  x: jax.Array  # the images as float32 in [0, 1]
  rng: np.random.Generator  # drawn from after the images

  def ptq(self, precision: str, **config: Any) -> quant.QuantizedModel:
    """The model quantized with `quant.default_config()` and `config`,
    calibrated on this one batch."""
    qc = quant.default_config().to_dict()
    qc.update(num_calib_batches=1, calib_batch_size=len(self.images),
              **config)
    return quant.quantize_model(self.name, self.num_classes, {},
                                self.variables,
                                quant.parse_spec(precision, qc), self.images)


def random_model(name: str, num_classes: int, batch: int,
                 seed: int = 1) -> RandomModel:
  """`name` at its registered image size with random weights and images."""
  size = models.model_info(name).image_size
  module = models.get_model(name, num_classes=num_classes)
  variables = random_init.he_normal_variables(module, size)
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (batch, size, size, 3), np.uint8)
  x = jnp.asarray(images, jnp.float32) / 255.0
  return RandomModel(name, num_classes, module, variables, images, x, rng)
