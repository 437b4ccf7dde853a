"""Suite registry. Importing this package registers every suite module."""

import importlib

from robustmq_jax.suites.base import Cell
from robustmq_jax.suites.base import get_suite
from robustmq_jax.suites.base import list_suites
from robustmq_jax.suites.base import ModelUnderTest
from robustmq_jax.suites.base import register
from robustmq_jax.suites.base import Suite
from robustmq_jax.suites.base import SuiteContext

# Each module registers its suite on import; a suite whose module is not
# written yet is simply absent from list_suites().
for _m in ('clean', 'adversarial', 'corruption', 'systematic', 'amplification'):
  try:
    importlib.import_module(f'robustmq_jax.suites.{_m}')
  except ModuleNotFoundError as e:
    if e.name != f'robustmq_jax.suites.{_m}':
      raise
