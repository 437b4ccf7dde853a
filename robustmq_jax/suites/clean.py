"""The clean suite: top-1 accuracy on unmodified test images."""

from typing import Any, Iterator, Sequence

import jax.numpy as jnp

from robustmq_jax.results import outcomes
from robustmq_jax.suites import base


def correct(logits, labels):
  return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)


def correct_fn(apply):
  """Per-example fn {'correct': top-1 hit of `apply` on the batch images}.

  The evaluator compiles once per function object: callers keep the result
  (in their run-scoped `_fns`) for as long as `apply` is in use.
  """
  return lambda v, b, k: {
      'correct': correct(apply(v, b['image']), b['label'])}


@base.register
class CleanSuite(base.Suite):
  """One cell, noise 'none'; also the real-integer accuracy when available."""

  name = 'clean'

  def __init__(self):
    self._fns = {}

  def cells(self, ctx, model) -> Sequence[base.Cell]:
    return [base.Cell('none', {})]

  def _correct_fn(self, apply):
    if apply not in self._fns:
      self._fns[apply] = correct_fn(apply)
    return self._fns[apply]

  def run(self, ctx, model, cells) -> Iterator[tuple[base.Cell, dict[str, Any]]]:
    for cell in cells:
      s = ctx.evaluator.sums(self._correct_fn(model.apply), ctx.batches(),
                             variables=model.variables, total=ctx.num_examples,
                             desc=f'clean {model.name} {model.precision}',
                             keep=('correct',))
      metrics = {'accuracy': s['correct'] / s['n'], 'n': int(s['n']),
                 outcomes.FIELD: outcomes.from_sums(s)}
      if model.serve_apply is not None:
        t = ctx.evaluator.sums(self._correct_fn(model.serve_apply),
                               ctx.batches(),
                               variables=model.serve_variables,
                               total=ctx.num_examples)
        metrics['accuracy_int8'] = t['correct'] / t['n']
      yield cell, metrics
