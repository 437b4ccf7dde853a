"""Systematic noise (ImageNet-S): decoders x resize methods, on device.

Public API:
  resize(images, size, *, method): PIL / OpenCV resizes of uint8 NHWC
    batches, emulated exactly with separable matmuls inside jit.
  resize_many(images, size, *, method, crop=None): the same for a list of
    images of different sizes (one compile per padded size).
  decode(jpeg_bytes, *, decoder): decodes with a named library.
  list_decoders(): every named decoder, its availability and why not.
"""

from robustmq_jax.systematic.resample import METHODS
from robustmq_jax.systematic.resample import recipe
from robustmq_jax.systematic.resample import REFERENCE_METHOD
from robustmq_jax.systematic.resample import resize
from robustmq_jax.systematic.batch import resize_many
from robustmq_jax.systematic.decoders import available_decoders
from robustmq_jax.systematic.decoders import decode
from robustmq_jax.systematic.decoders import decode_many
from robustmq_jax.systematic.decoders import DECODERS
from robustmq_jax.systematic.decoders import DecodeError
from robustmq_jax.systematic.decoders import DecoderUnavailable
from robustmq_jax.systematic.decoders import list_decoders
from robustmq_jax.systematic.decoders import REFERENCE_DECODER
