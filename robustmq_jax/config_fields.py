"""Validation of the top-level run config (suites validate their own part)."""

from typing import Any, Sequence

import ml_collections

from robustmq_jax.errors import invalid


def name_list(config: ml_collections.ConfigDict, field: str) -> list[str]:
  """A tuple/list/str field as a list of names; 'a,b' entries are split.

  Command-line overrides of tuple fields arrive as one string
  (`--config.suites=clean,adversarial`), so commas split entries.
  """
  value = config.get(field)
  if isinstance(value, str):
    value = (value,)
  if not isinstance(value, (list, tuple)):
    raise invalid(f'config.{field}', value, 'a tuple of names')
  names = [n.strip() for v in value for n in str(v).split(',') if n.strip()]
  if not names:
    raise invalid(f'config.{field}', value, 'at least one name')
  return names


def check_int(config: ml_collections.ConfigDict, field: str, *,
              minimum: int = 0, multiple_of: int = 1) -> int:
  value = _get(config, field)
  if (isinstance(value, bool) or not isinstance(value, int) or value < minimum
      or value % multiple_of):
    extra = f' and a multiple of {multiple_of}' if multiple_of > 1 else ''
    raise invalid(f'config.{field}', value,
                  f'an integer >= {minimum}{extra}')
  return value


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
