"""What to quantize and how: `QuantSpec`, from a precision and config.quant.

A precision string names the bit widths: ``'fp32'`` (float), ``'w<W>a<A>'``
with W, A in 2..8 (``'w4a4'``), or ``'w<W>a16'`` / ``'w<W>a32'`` for
weight-only quantization (activations stay float). Everything else comes from
``config.quant`` (see `default_config`), and the pair becomes one frozen
`QuantSpec` that the rest of `robustmq_jax.quant` reads.
"""

import dataclasses
import re
from typing import Any

import ml_collections

from robustmq_jax.errors import invalid
from robustmq_jax.errors import UserError

FLOAT_PRECISION = 'fp32'
METHODS = ('ptq', 'dorefa', 'pact', 'lsq')
QAT_METHODS = ('dorefa', 'pact', 'lsq')
GRANULARITIES = ('per_tensor', 'per_channel')
CALIBRATIONS = ('minmax', 'percentile', 'mse')
WEIGHT_CALIBRATIONS = ('minmax', 'mse')
FIRST_LAST = ('8bit', 'float', 'same')
BACKENDS = ('aqt',)
OPTIMIZERS = ('adamw', 'sgd')
MIN_BITS, MAX_BITS = 2, 8
FLOAT_ACT_BITS = (16, 32)  # 'w4a16': weights only.

_PRECISION_RE = re.compile(r'^w(\d+)a(\d+)$')
_PRECISION_ALLOWED = (
    f"'{FLOAT_PRECISION}' or 'w<W>a<A>' with W in {MIN_BITS}..{MAX_BITS} and "
    f'A in {MIN_BITS}..{MAX_BITS} (or 16 for weight-only), e.g. '
    "'w8a8', 'w4a4', 'w4a16'")


def default_config(variant: str = '') -> ml_collections.ConfigDict:
  """Defaults of ``config.quant`` (MQBench "academic" preset).

  Fields:
    method: 'ptq' (calibration only), or the QAT methods 'dorefa', 'pact',
      'lsq' (fine-tuning from the float checkpoint with `qat`).
    granularity: weight scales 'per_tensor' (MQBench academic) or
      'per_channel' (one scale per output channel). Activations are always
      per-tensor with a static, calibrated scale.
    symmetric: symmetric integer grids (the only scheme implemented).
    unsigned_activations: MQBench's adaptive sign: an activation whose
      calibration minimum is >= 0 (after ReLU, softmax) uses the unsigned
      grid [0, 2^b - 1] instead of [-2^(b-1), 2^(b-1) - 1].
    first_last: the first contraction (stem conv / patch embedding) and the
      classifier head: '8bit' (weights and their input activation, MQBench
      academic), 'float' (not quantized) or 'same' (the precision's bits).
    calibration: activation clipping bound: 'minmax', 'percentile' (of |x|)
      or 'mse' (the bound minimising the squared quantization error).
    percentile: percentile for 'percentile' calibration.
    mse_grid: candidate bounds (fractions of the max) searched by 'mse'.
    weight_calibration: 'minmax' or 'mse' for PTQ weight scales.
    num_calib_batches: training batches used for calibration.
    calib_batch_size: images per calibration batch.
    eval_int8: also build AQT's converted/served model (int8 weights,
      int32-accumulated integer matmuls) and report its accuracy.
    checkpoint_dir: folder with shipped quantized checkpoints laid out as
      <dir>/<model>/<precision>_<method>/ ('' = none); used when its
      fingerprint matches this spec and the float checkpoint.
    backend: 'aqt' (the only backend so far; the seam admits Qwix later).
    bn_fold: fold every BatchNorm into the conv before it (MQBench academic
      ``bnfold``, PyTorch-style; `robustmq_jax.quant.bnfold`): the folded
      kernel ``w * gamma / sqrt(var + eps)`` is what gets quantized, and QAT
      trains the folded kernel while BatchNorm keeps updating its running
      statistics. Off here (existing results unchanged); the paper-grid
      config turns it on.
    qat: the fine-tuning recipe (optax): steps, batch_size, learning_rate,
      warmup_steps, weight_decay, optimizer ('adamw' or 'sgd' Nesterov),
      label_smoothing, pad_crop (random-crop augmentation, pixels).

  Args:
    variant: '' / 'imagenet' (PTQ) or 'sample' (LSQ with the shipped sample
      checkpoints, so the quickstart covers w8a8..w2a2 at QAT quality), or
      'robustmq' (the paper grid's MQBench academic setting: BatchNorm
      folded, QAT with MQBench's recipe: SGD Nesterov, lr 0.004, weight
      decay 1e-4, label smoothing 0.1; the config picks the method).

  Returns:
    A ConfigDict.
  """
  sample = variant == 'sample'
  if variant == 'robustmq':
    cfg = default_config('imagenet')
    cfg.bn_fold = True
    cfg.qat.update(optimizer='sgd', learning_rate=0.004, weight_decay=1e-4,
                   label_smoothing=0.1)
    return cfg
  return ml_collections.ConfigDict({
      'method': 'lsq' if sample else 'ptq',
      'granularity': 'per_tensor',
      'symmetric': True,
      'unsigned_activations': True,
      'first_last': '8bit',
      'calibration': 'mse' if sample else 'minmax',
      'percentile': 99.99,
      'mse_grid': 64,
      'weight_calibration': 'minmax',
      'num_calib_batches': 8,
      'calib_batch_size': 32,
      'eval_int8': True,
      'checkpoint_dir': 'checkpoints/sample' if sample else '',
      'backend': 'aqt',
      'bn_fold': False,
      'qat': {
          'steps': 200,
          'batch_size': 64,
          'learning_rate': 1e-3,
          'warmup_steps': 20,
          'weight_decay': 0.0,
          'optimizer': 'adamw',
          'label_smoothing': 0.0,
          'pad_crop': 2,
      },
  })


@dataclasses.dataclass(frozen=True)
class QatRecipe:
  """Fine-tuning recipe (maps onto `robustmq_jax.training.Recipe`)."""
  steps: int = 200
  batch_size: int = 64
  learning_rate: float = 1e-3
  warmup_steps: int = 20
  weight_decay: float = 0.0
  optimizer: str = 'adamw'
  label_smoothing: float = 0.0
  pad_crop: int = 2


@dataclasses.dataclass(frozen=True)
class QuantSpec:
  """One precision under one quantization setting.

  Attributes:
    precision: the precision string, e.g. 'w4a4'.
    w_bits: weight bits, None for float.
    a_bits: activation bits, None for float (weight-only or fp32).
    method: 'ptq', 'dorefa', 'pact' or 'lsq'.
    granularity: 'per_tensor' or 'per_channel' weight scales.
    symmetric: always True.
    unsigned_activations: adaptive sign for non-negative activations.
    first_last: '8bit', 'float' or 'same'.
    calibration: 'minmax', 'percentile' or 'mse' (activations).
    percentile: for 'percentile'.
    mse_grid: number of candidate bounds for 'mse'.
    weight_calibration: 'minmax' or 'mse'.
    num_calib_batches: calibration batches.
    calib_batch_size: images per calibration batch.
    eval_int8: build the served integer model too.
    checkpoint_dir: shipped quantized checkpoints ('' = none).
    backend: 'aqt'.
    bn_fold: BatchNorm folded into the preceding conv before quantizing.
    qat: fine-tuning recipe (QAT methods only).
  """
  precision: str
  w_bits: int | None
  a_bits: int | None
  method: str = 'ptq'
  granularity: str = 'per_tensor'
  symmetric: bool = True
  unsigned_activations: bool = True
  first_last: str = '8bit'
  calibration: str = 'minmax'
  percentile: float = 99.99
  mse_grid: int = 64
  weight_calibration: str = 'minmax'
  num_calib_batches: int = 8
  calib_batch_size: int = 32
  eval_int8: bool = True
  checkpoint_dir: str = ''
  backend: str = 'aqt'
  bn_fold: bool = False
  qat: QatRecipe = QatRecipe()

  @property
  def is_float(self) -> bool:
    return self.w_bits is None and self.a_bits is None

  @property
  def is_qat(self) -> bool:
    return self.method in QAT_METHODS

  def fingerprint(self, seed: int = 0) -> dict[str, Any]:
    """The fields that determine the quantized model (cache key)."""
    d = dataclasses.asdict(self)
    for k in ('eval_int8', 'checkpoint_dir'):
      d.pop(k)
    if not self.bn_fold:  # Keeps the keys of checkpoints made before it.
      d.pop('bn_fold')
    if not self.is_qat:
      d.pop('qat')
    else:
      d['seed'] = seed
    return d


def parse_precision(precision: Any, field: str = 'config.precisions'
                    ) -> tuple[int | None, int | None]:
  """'w4a4' -> (4, 4); 'w4a16' -> (4, None); 'fp32' -> (None, None).

  Raises:
    UserError: anything else (bits outside 2..8, activation bits without
      weight bits, unknown format).
  """
  if precision == FLOAT_PRECISION:
    return None, None
  m = _PRECISION_RE.match(precision) if isinstance(precision, str) else None
  if m is None:
    raise invalid(field, precision, _PRECISION_ALLOWED)
  w, a = int(m.group(1)), int(m.group(2))
  if w in FLOAT_ACT_BITS and MIN_BITS <= a <= MAX_BITS:
    raise UserError(
        f'{field}={precision!r} is not valid: activation bits without weight '
        f'bits are not supported; allowed: {_PRECISION_ALLOWED}.')
  if not MIN_BITS <= w <= MAX_BITS:
    raise UserError(
        f'{field}={precision!r} is not valid: weight bits {w} is outside '
        f'{MIN_BITS}..{MAX_BITS}; allowed: {_PRECISION_ALLOWED}.')
  if a in FLOAT_ACT_BITS:
    return w, None
  if not MIN_BITS <= a <= MAX_BITS:
    raise UserError(
        f'{field}={precision!r} is not valid: activation bits {a} is outside '
        f'{MIN_BITS}..{MAX_BITS} (or 16 for weight-only); allowed: '
        f'{_PRECISION_ALLOWED}.')
  return w, a


def _get(qconfig, key, default):
  if qconfig is None:
    return default
  value = qconfig.get(key, default) if hasattr(qconfig, 'get') else default
  return default if value is None else value


def _choice(qconfig, key, choices, default, prefix='config.quant'):
  value = _get(qconfig, key, default)
  if value not in choices:
    raise invalid(f'{prefix}.{key}', value, choices)
  return value


def _int(qconfig, key, default, minimum, prefix='config.quant'):
  value = _get(qconfig, key, default)
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise invalid(f'{prefix}.{key}', value, f'an integer >= {minimum}')
  return value


def _float(qconfig, key, default, lo, hi, prefix='config.quant'):
  value = _get(qconfig, key, default)
  if (isinstance(value, bool) or not isinstance(value, (int, float))
      or not lo <= value <= hi):
    raise invalid(f'{prefix}.{key}', value, f'a number in [{lo}, {hi}]')
  return float(value)


def _bool(qconfig, key, default, prefix='config.quant'):
  value = _get(qconfig, key, default)
  if not isinstance(value, bool):
    raise invalid(f'{prefix}.{key}', value, (True, False))
  return value


def parse_qat(qconfig) -> QatRecipe:
  """`config.quant.qat` -> QatRecipe (UserError on a bad field)."""
  q = _get(qconfig, 'qat', None)
  d = QatRecipe()
  p = 'config.quant.qat'
  return QatRecipe(
      steps=_int(q, 'steps', d.steps, 0, p),
      batch_size=_int(q, 'batch_size', d.batch_size, 1, p),
      learning_rate=_float(q, 'learning_rate', d.learning_rate, 0.0, 10.0, p),
      warmup_steps=_int(q, 'warmup_steps', d.warmup_steps, 0, p),
      weight_decay=_float(q, 'weight_decay', d.weight_decay, 0.0, 1.0, p),
      optimizer=_choice(q, 'optimizer', OPTIMIZERS, d.optimizer, p),
      label_smoothing=_float(q, 'label_smoothing', d.label_smoothing, 0.0,
                             1.0, p),
      pad_crop=_int(q, 'pad_crop', d.pad_crop, 0, p))


def parse_spec(precision: str, qconfig=None,
               field: str = 'config.precisions') -> QuantSpec:
  """Builds the QuantSpec of `precision` under `qconfig` (config.quant).

  Args:
    precision: 'fp32', 'w8a8', 'w4a16', ...
    qconfig: a ConfigDict / dict with the fields of `default_config` (missing
      fields take the defaults), or None.
    field: the config field `precision` came from (for error messages).

  Returns:
    The spec.

  Raises:
    UserError: naming the first bad field.
  """
  w_bits, a_bits = parse_precision(precision, field)
  d = QuantSpec(precision=FLOAT_PRECISION, w_bits=None, a_bits=None)
  method = _choice(qconfig, 'method', METHODS, d.method)
  symmetric = _bool(qconfig, 'symmetric', d.symmetric)
  if not symmetric:
    raise invalid('config.quant.symmetric', symmetric,
                  'True (asymmetric grids are not implemented)')
  checkpoint_dir = _get(qconfig, 'checkpoint_dir', d.checkpoint_dir)
  if not isinstance(checkpoint_dir, str):
    raise invalid('config.quant.checkpoint_dir', checkpoint_dir,
                  "a folder path or ''")
  return QuantSpec(
      precision=precision, w_bits=w_bits, a_bits=a_bits, method=method,
      granularity=_choice(qconfig, 'granularity', GRANULARITIES,
                          d.granularity),
      symmetric=symmetric,
      unsigned_activations=_bool(qconfig, 'unsigned_activations',
                                 d.unsigned_activations),
      first_last=_choice(qconfig, 'first_last', FIRST_LAST, d.first_last),
      calibration=_choice(qconfig, 'calibration', CALIBRATIONS,
                          d.calibration),
      percentile=_float(qconfig, 'percentile', d.percentile, 50.0, 100.0),
      mse_grid=_int(qconfig, 'mse_grid', d.mse_grid, 2),
      weight_calibration=_choice(qconfig, 'weight_calibration',
                                 WEIGHT_CALIBRATIONS, d.weight_calibration),
      num_calib_batches=_int(qconfig, 'num_calib_batches',
                             d.num_calib_batches, 1),
      calib_batch_size=_int(qconfig, 'calib_batch_size', d.calib_batch_size,
                            1),
      eval_int8=_bool(qconfig, 'eval_int8', d.eval_int8),
      checkpoint_dir=checkpoint_dir,
      backend=_choice(qconfig, 'backend', BACKENDS, d.backend),
      bn_fold=_bool(qconfig, 'bn_fold', d.bn_fold),
      qat=parse_qat(qconfig))
