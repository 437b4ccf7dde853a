"""What a test does when something it needs is missing: fail under CI,
skip elsewhere.

.ci/run sets CI=true and installs everything the suite needs (Chromium,
requirements-test.txt), so there a missing tool is a broken setup, not a
reason to skip a reference comparison.
"""

import os

import pytest


def required() -> bool:
  """Whether this run is CI (CI=1/true/yes), where nothing may be missing."""
  return os.environ.get('CI', '').lower() in ('1', 'true', 'yes')


def missing(what: str) -> None:
  """Fails the test under CI, skips it elsewhere; `what` says what is
  missing."""
  if required():
    pytest.fail(f'{what} (.ci/run installs it)')
  pytest.skip(what, allow_module_level=True)
