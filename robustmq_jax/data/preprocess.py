"""Host-side decoding and the evaluation transforms."""

import io

import numpy as np
from PIL import Image


def decode_rgb(encoded: bytes) -> Image.Image:
  """Decodes an encoded image with PIL (the reference decoder) to RGB."""
  with Image.open(io.BytesIO(encoded)) as img:
    return img.convert('RGB')


def encode_png(image: np.ndarray) -> bytes:
  """Lossless encoding of a uint8 HWC (or HW1) array."""
  buf = io.BytesIO()
  Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(
      buf, format='PNG')
  return buf.getvalue()


def resize_crop(img: Image.Image, size: int, *, ratio: float = 256 / 224
                ) -> np.ndarray:
  """RobustBench's Res256Crop224: shorter side to size*ratio, centre crop.

  Uses PIL bilinear with antialiasing, as torchvision's Resize on PIL images.
  An image already of the model's size is returned unchanged (32x32 data, or
  ImageNet-C's released 224 crops, which must not be resized again).
  """
  w, h = img.size
  if (w, h) == (size, size):
    return np.asarray(img, np.uint8)
  short = int(round(size * ratio))
  if w <= h:
    new = (short, int(short * h / w))
  else:
    new = (int(short * w / h), short)
  img = img.resize(new, Image.Resampling.BILINEAR)
  left = int(round((new[0] - size) / 2.0))
  top = int(round((new[1] - size) / 2.0))
  return np.asarray(img.crop((left, top, left + size, top + size)), np.uint8)
