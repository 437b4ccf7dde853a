"""Timing shared by the benchmark scripts (imported as a sibling module)."""

import time
from typing import Any, Callable

import jax
import numpy as np


def first_and_median(fn: Callable[..., Any], *args: Any,
                     repeats: int) -> tuple[float, float, Any]:
  """Times `fn(*args)`: the first call, then the median of `repeats` calls.

  Args:
    fn: the function (usually jitted: the first call includes compilation).
    *args: its arguments.
    repeats: number of timed calls after the first.

  Returns:
    (first call in seconds, median of the timed calls in seconds, result of
    the first call).
  """
  start = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return first, float(np.median(times)), out
