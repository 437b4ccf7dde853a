"""Quantization (stub until the AQT layer lands): only 'fp32' is accepted.

Contract used by the runner (robustmq_jax/runner.py):

  validate_precision(precision, field) -> None            # UserError if bad
  validate_config(qconfig) -> None                         # config.quant
  build(request: QuantRequest) -> ModelUnderTest fields     # see below
"""

import dataclasses
from typing import Any, Callable, Iterator

import numpy as np

from robustmq_jax.errors import UserError

FLOAT_PRECISION = 'fp32'


@dataclasses.dataclass
class QuantRequest:
  """What the runner hands to the quantization layer for one precision.

  Attributes:
    model_name: name in `robustmq_jax.models.list_models()`.
    model_kwargs: settings to rebuild the module (normalisation, GELU, ...).
    num_classes: classifier width.
    float_variables: the float model's variables.
    precision: 'w8a8', 'w4a16', ...
    qconfig: `config.quant` (method, granularity, calibration, QAT recipe).
    train_arrays: () -> (uint8 NHWC images, int32 labels) of the training /
      calibration split (called lazily; may be large).
    cache_dir: folder for cached calibrated / fine-tuned checkpoints.
    mesh: the one device mesh.
    seed: run seed.
  """
  model_name: str
  model_kwargs: dict[str, Any]
  num_classes: int
  float_variables: Any
  precision: str
  qconfig: Any
  train_arrays: Callable[[], tuple[np.ndarray, np.ndarray]]
  cache_dir: str
  mesh: Any
  seed: int = 0


def validate_precision(precision: str, field: str = 'config.precisions'):
  if precision != FLOAT_PRECISION:
    raise UserError(
        f'{field} contains {precision!r}, but quantized precisions are not '
        f'available in this build; allowed: {FLOAT_PRECISION!r}.')


def validate_config(qconfig) -> None:
  del qconfig


def build(request: QuantRequest) -> dict[str, Any]:
  """Returns ModelUnderTest fields (apply, variables, grad_apply, ...)."""
  validate_precision(request.precision)
  raise AssertionError('unreachable')
