"""Precision strings of `config.precisions`: bit widths and a method.

``'fp32'``, ``'w4a4'``, ``'w4a16'`` name bit widths
(`robustmq_jax.quant.parse_precision`). A suffix after ``':'`` names the
method of that precision, so one run varies the method row by row:

* ``'w4a4:ptq'``, ``'w4a4:dorefa'``, ``'w4a4:pact'``, ``'w4a4:lsq'``: a
  quantization method of `robustmq_jax.quant`; it replaces
  ``config.quant.method`` for that precision only (configs/robustmq.py
  crosses DoReFa, PACT and LSQ with four bit widths this way);
* ``'w4a4:dq'``, ``'w4a4:laaq'``, ``'w4a4:adv_ptq'``, ``'fp32:adv'``: the
  defenses, built by `robustmq_jax.defenses.build` (see
  `robustmq_jax.defenses.settings` for their settings).

Without a suffix the method is ``config.quant.method`` (``'float'`` for
fp32). A result row keeps the precision as written (``'w4a4:pact'``) and
the method (``'pact'``) in its key, so rows of two methods at the same bits
never collide. The settings (validation) and the runner (method of a row,
which builder) both parse precisions here.
"""

from typing import Any

from robustmq_jax.errors import invalid
from robustmq_jax.errors import UserError
from robustmq_jax.quant import spec as spec_lib

SEPARATOR = ':'
QUANT_METHODS = spec_lib.METHODS
DEFENSE_METHODS = ('dq', 'laaq', 'adv', 'adv_ptq')
# Suffixes of float models ('fp32:adv'); every other suffix needs bits.
FLOAT_ONLY = ('adv',)
FLOAT_METHOD = 'float'


def split(precision: str) -> tuple[str, str | None]:
  """'w4a4:dq' -> ('w4a4', 'dq'); 'w4a4' -> ('w4a4', None)."""
  if isinstance(precision, str) and SEPARATOR in precision:
    base, method = precision.split(SEPARATOR, 1)
    return base, method
  return precision, None


def validate(precision: str, field: str = 'config.precisions') -> None:
  """UserError unless `precision` is bit widths with an allowed suffix."""
  base, method = split(precision)
  spec_lib.parse_precision(base, field)
  if method is None:
    return
  allowed = QUANT_METHODS + DEFENSE_METHODS
  if method not in allowed:
    raise invalid(f'{field} method suffix of {precision!r}', method, allowed)
  is_float = base == spec_lib.FLOAT_PRECISION
  if is_float != (method in FLOAT_ONLY):
    raise UserError(
        f'{field} contains {precision!r}: method {method!r} '
        + ('needs bit widths, e.g. "w4a4:' + method + '"' if is_float else
           'is a float model; write "fp32:' + method + '"') + '.')


def is_defense(precision: str) -> bool:
  """True when the suffix names a defense (built by robustmq_jax.defenses)."""
  return split(precision)[1] in DEFENSE_METHODS


def method_of(precision: str, qconfig: Any) -> str:
  """The row's method: the suffix, else config.quant.method, or 'float'."""
  base, method = split(precision)
  if method is not None:
    return method
  if base == spec_lib.FLOAT_PRECISION:
    return FLOAT_METHOD
  return str((qconfig or {}).get('method', 'ptq'))


def weight_bits(precision: str) -> int | None:
  """Weight bits of 'w4a4' or 'w4a4:pact'; None for float or bad text."""
  base, _ = split(precision)
  try:
    return spec_lib.parse_precision(base)[0]
  except UserError:
    return None


def quant_config(precision: str, qconfig: Any) -> tuple[str, Any]:
  """(bit widths, config.quant) that `robustmq_jax.quant` builds it from.

  A quantization-method suffix becomes ``config.quant.method``; without a
  suffix `qconfig` is returned as it is.

  Raises:
    ValueError: for a defense precision (not built by `robustmq_jax.quant`).
  """
  base, method = split(precision)
  if method is None:
    return base, qconfig
  if method not in QUANT_METHODS:
    raise ValueError(f'{precision!r} is not a quantization method')
  d = (qconfig.to_dict() if hasattr(qconfig, 'to_dict') else
       dict(qconfig or {}))
  d['method'] = method
  return base, d
