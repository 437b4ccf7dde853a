"""User-facing errors: one clear sentence, exit code 2 from the main job."""

from typing import Any, Iterable


class UserError(ValueError):
  """Bad input from the user (config, flags, files); printed without traceback."""


def invalid(field: str, value: Any, allowed: str | Iterable[Any]) -> UserError:
  """Builds the standard error: names the field, the value and what is allowed.

  Args:
    field: dotted config field or flag name, e.g. ``config.precisions``.
    value: the offending value.
    allowed: a sentence fragment or an iterable of allowed values.

  Returns:
    A `UserError` to raise.
  """
  if not isinstance(allowed, str):
    allowed = 'one of ' + ', '.join(repr(a) for a in allowed)
  return UserError(f'{field}={value!r} is not valid; allowed: {allowed}.')
