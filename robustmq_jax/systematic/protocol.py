"""The ImageNet-S transform: square resize, then centre crop.

ImageNet-S (RobustART / ModelTC) decodes a photograph, resizes it to a
square 256 x 256 (aspect not preserved) with the method under test, and
crops the centre 224 x 224 (16 pixels off each side).

Protocols:

* ``imagenet``: resize to `resize_to` then centre-crop the model's input
  size. `resize_to` defaults to the model size scaled by 256/224 and rounded
  to an even margin: 224 -> 256 (ImageNet-S exactly), 32 -> 36 (2 pixels
  each side; 32 * 256 / 224 = 36.6), 64 -> 74. For 32 x 32 data (the sample,
  CIFAR) this upsamples, so every method still interpolates.
* ``native``: resize straight to the model's input size, no crop. For data
  already at the model's size every method is then the identity and only
  decoders differ.
"""

import dataclasses
from typing import Any

from robustmq_jax.errors import invalid

PROTOCOLS = ('imagenet', 'native')
RATIO = 256 / 224


@dataclasses.dataclass(frozen=True)
class Protocol:
  """Geometry of the transform.

  Attributes:
    name: 'imagenet' or 'native'.
    resize_to: side of the square the library resizes to.
    crop: side of the centre crop (the model input).
  """
  name: str
  resize_to: int
  crop: int

  @property
  def offset(self) -> int:
    return (self.resize_to - self.crop) // 2

  @property
  def size(self) -> tuple[int, int]:
    return (self.resize_to, self.resize_to)

  @property
  def crop_box(self) -> tuple[int, int, int, int] | None:
    """(top, left, height, width) of the crop, None when there is none."""
    if self.crop == self.resize_to:
      return None
    return (self.offset, self.offset, self.crop, self.crop)

  def params(self) -> dict[str, Any]:
    return {'protocol': self.name, 'resize_to': self.resize_to,
            'crop': self.crop}


def default_resize_to(crop: int) -> int:
  """crop * 256 / 224 with an even margin (224 -> 256, 32 -> 36)."""
  return crop + 2 * int(round(crop * (RATIO - 1) / 2))


def make(name: str, image_size: int, resize_to: int | None = None,
         field: str = 'config.systematic') -> Protocol:
  """Builds and validates a Protocol for a model of input side image_size."""
  if name not in PROTOCOLS:
    raise invalid(f'{field}.protocol', name, PROTOCOLS)
  if name == 'native':
    if resize_to not in (None, image_size):
      raise invalid(f'{field}.resize_to', resize_to,
                    "None with protocol='native'")
    return Protocol(name, image_size, image_size)
  if resize_to is None:
    resize_to = default_resize_to(image_size)
  if (isinstance(resize_to, bool) or not isinstance(resize_to, int)
      or resize_to < image_size):
    raise invalid(f'{field}.resize_to', resize_to,
                  f'an int >= the model input size {image_size}')
  return Protocol(name, resize_to, image_size)
