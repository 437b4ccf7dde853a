r"""XLA:CPU kernel choice for the 32x32 twins: forward and input gradient.

  python benchmarks/cpu_kernels.py
  python benchmarks/cpu_kernels.py --models=resnet20_cifar --batch=64 \
      --repeats=5 --variants=default,eigen_convs,eigen

What `robustmq_jax.jax_setup.cpu_kernels` picks rests on these figures. For
each model (random He-normal weights, float and w4a4 MQBench-academic PTQ
calibrated on one random batch) it compiles the forward and the input
gradient of the cross-entropy, as the suites run them (through
`conv_layout.canonical_convs`), once per variant of XLA's options (per
compile, `.compile(compiler_options=...)`, so one process compares them):

* default: XLA's own choice (in jax 0.10 YNNPACK takes convolutions, dots
  and reductions);
* eigen_convs: the default less convolutions, what the main job sets for a
  32x32 run with a convolutional model
  (`xla_cpu_experimental_ynn_fusion_type=-individual_convolution`): dots
  and reductions (a global pool) stay on YNNPACK;
* eigen: the flag empty (no YNNPACK; what it sets for 224x224 models).

The variants run in turns, one call each per round, for --repeats rounds
after a warm-up (compile excluded), so a shared machine whose speed drifts
slows them alike. Prints milliseconds per batch (median) and the speed-up
over the default.
"""

import os
import statistics
import sys
import time
from typing import Any, Callable, Sequence

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

# This checkout's package, whichever one is installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from robustmq_jax.xla_cpu import conv_layout  # pylint: disable=g-import-not-at-top
import random_models  # pylint: disable=g-import-not-at-top

_YNN = 'xla_cpu_experimental_ynn_fusion_type'
_VARIANTS = {
    'default': {},
    # The default less convolutions, spelled out (a per-compile option takes
    # no '-' form). It compiles to the same optimized HLO as
    # '-individual_convolution' in XLA_FLAGS, which the main job sets
    # (checked on ResNet-20's input gradient).
    'eigen_convs': {_YNN: 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,'
                          'LIBRARY_FUSION_TYPE_REDUCE'},
    'eigen': {_YNN: ''},
}

_MODELS = flags.DEFINE_list(
    'models', ['resnet20_cifar', 'regnetx_cifar', 'mobilenet_v2_cifar',
               'vit_tiny_patch4_32'], 'Models (32x32 twins).')
_BATCH = flags.DEFINE_integer('batch', 64, 'Batch size.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed rounds (median).')
_VARIANT_NAMES = flags.DEFINE_list('variants', list(_VARIANTS),
                                   'XLA option sets: ' + ', '.join(_VARIANTS))


def _programs(
    name: str) -> dict[tuple[str, str], tuple[Callable[..., Any], tuple]]:
  """{(precision, program): (fn, args)} of one model, not yet compiled."""
  m = random_models.random_model(name, 10, _BATCH.value)
  module, variables, x = m.module, m.variables, m.x
  labels = jnp.asarray(m.rng.integers(0, 10, _BATCH.value))
  qm = m.ptq('w4a4')
  out = {}
  for precision, apply, v in (
      ('float', lambda v, x: module.apply(v, x), variables),
      ('w4a4', qm.apply_fn(), qm.variables)):

    def loss(v, x, apply=apply):
      logp = jax.nn.log_softmax(apply(v, x))
      return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], 1))

    out[(precision, 'forward')] = (conv_layout.canonical_convs(apply), (v, x))
    out[(precision, 'input gradient')] = (
        conv_layout.canonical_convs(jax.value_and_grad(loss, argnums=1)),
        (v, x))
  return out


def main(argv: Sequence[str]) -> None:
  del argv
  names = _VARIANT_NAMES.value
  print(f'jax {jax.__version__} on {jax.devices()[0].platform}, batch '
        f'{_BATCH.value}, median of {_REPEATS.value} rounds, load '
        f'{os.getloadavg()[0]:.2f}')
  print('| model | precision | program | ' + ' | '.join(
      f'{v} ms' for v in names) + ' | ' + ' | '.join(
          f'{v} speed-up' for v in names[1:]) + ' |')
  print('|---' * (3 + 2 * len(names) - 1) + '|')
  for name in _MODELS.value:
    for (precision, program), (fn, args) in _programs(name).items():
      lowered = jax.jit(fn).lower(*args)
      compiled = {v: lowered.compile(compiler_options=_VARIANTS[v])
                  for v in names}
      for c in compiled.values():
        jax.block_until_ready(c(*args))
      times = {v: [] for v in names}
      for _ in range(_REPEATS.value):
        for v in names:
          start = time.perf_counter()
          jax.block_until_ready(compiled[v](*args))
          times[v].append(time.perf_counter() - start)
      ms = {v: 1000 * statistics.median(t) for v, t in times.items()}
      print(f'| {name} | {precision} | {program} | ' + ' | '.join(
          f'{ms[v]:.1f}' for v in names) + ' | ' + ' | '.join(
              f'{ms[names[0]] / ms[v]:.2f}x' for v in names[1:]) + ' |',
            flush=True)


if __name__ == '__main__':
  app.run(main)
