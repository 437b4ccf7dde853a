"""Field-level parsing and checks of the run config (no JAX, no files).

`parse_list` is the one parser of list fields: command-line overrides of
tuple fields arrive as one string (`--config.suites=clean,adversarial`,
`--config.corruption.severities=1,3,5` or a Python literal
`"--config.adversarial.attacks=('fgsm','pgd_linf')"`).
"""

import ast
from typing import Any, Sequence

import ml_collections

from robustmq_jax.errors import invalid

_TYPE_WORDS = {int: 'integers', float: 'numbers', str: 'names'}


def parse_list(value: Any, field: str,
               element_type: type | None = None) -> tuple[Any, ...]:
  """A list field as a tuple: 'a,b', '(a, b)', ('a,b', 'c') or (1, 2).

  Args:
    value: the field's value (a string from the command line, or a
      tuple/list set in a config file).
    field: dotted field name for the error message, e.g. 'config.suites'.
    element_type: int, float or str to convert every entry to; None keeps
      literals as written (strings otherwise).

  Returns:
    The entries, stripped, empty ones dropped.

  Raises:
    UserError: an entry does not convert to `element_type`.
  """
  if isinstance(value, str):
    text = value.strip()
    if text[:1] in '([' and text:
      try:
        value = ast.literal_eval(text)
      except (ValueError, SyntaxError):
        raise invalid(field, value, 'a comma-separated list or a Python '
                      'tuple literal') from None
      if not isinstance(value, (tuple, list)):
        value = (value,)
    else:
      value = (text,)
  elif not isinstance(value, (tuple, list)):
    value = (value,)
  entries = []
  for v in value:
    parts = [p.strip() for p in v.split(',')] if isinstance(v, str) else [v]
    entries.extend(p for p in parts if p != '')
  if element_type is None:
    return tuple(entries)
  out = []
  for e in entries:
    try:
      if element_type is int and (isinstance(e, float) or isinstance(e, bool)):
        raise ValueError(e)
      out.append(element_type(e))
    except (TypeError, ValueError):
      kind = _TYPE_WORDS.get(element_type, element_type.__name__)
      raise invalid(field, value if len(value) > 1 else value[0],
                    f'a comma-separated list of {kind}') from None
  return tuple(out)


def name_list(config: ml_collections.ConfigDict, field: str) -> list[str]:
  """A tuple/list/str field of names as a list (at least one name)."""
  value = config.get(field)
  if not isinstance(value, (str, list, tuple)):
    raise invalid(f'config.{field}', value, 'a tuple of names')
  names = list(parse_list(value, f'config.{field}', str))
  if not names:
    raise invalid(f'config.{field}', value, 'at least one name')
  return names


def check_int(config: ml_collections.ConfigDict, field: str, *,
              minimum: int = 0, multiple_of: int = 1) -> int:
  """An integer field >= `minimum` (and a multiple of `multiple_of`)."""
  value = _get(config, field)
  if (isinstance(value, bool) or not isinstance(value, int) or value < minimum
      or value % multiple_of):
    extra = f' and a multiple of {multiple_of}' if multiple_of > 1 else ''
    raise invalid(f'config.{field}', value,
                  f'an integer >= {minimum}{extra}')
  return value


def check_number(config: ml_collections.ConfigDict, field: str, *,
                 minimum: float = 0.0) -> float:
  """A number field >= `minimum`."""
  value = _get(config, field)
  if (isinstance(value, bool) or not isinstance(value, (int, float))
      or not value >= minimum):
    raise invalid(f'config.{field}', value, f'a number >= {minimum:g}')
  return float(value)


def check_choice(config: ml_collections.ConfigDict, field: str,
                 choices: Sequence[Any]) -> Any:
  value = _get(config, field)
  if value not in choices:
    raise invalid(f'config.{field}', value, choices)
  return value


def _get(config, dotted: str):
  node = config
  for part in dotted.split('.'):
    node = node.get(part) if hasattr(node, 'get') else None
  return node
