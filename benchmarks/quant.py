r"""Forward cost of quantization: quantized / float forward time, side by side.

  python benchmarks/quant.py                       # ResNet-18, ViT-S/16
  python benchmarks/quant.py --models=resnet18 --batch=8 --repeats=3

For each model (224x224, batch 32, random weights, w4a4 MQBench-academic PTQ
calibrated on one random batch) it times, after compilation, the jitted
forward of: the float model; the fake-quant AQT model (what the suites
evaluate and differentiate); AQT's served model (int8 weights frozen by
CONVERT; integer matmuls with int32 accumulation; AQT's conv stays
simulated). Prints the median time and the ratio to the float forward.
Goal: fake-quant <= 1.3x.
"""

from absl import app
from absl import flags
import jax

import random_models  # benchmarks/random_models.py, beside this script.
import timing  # benchmarks/timing.py, beside this script.

_MODELS = flags.DEFINE_list('models', ['resnet18', 'vit_small_patch16_224'],
                            'Models.')
_BATCH = flags.DEFINE_integer('batch', 32, 'Batch size.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed runs (median).')
_PRECISION = flags.DEFINE_string('precision', 'w4a4', 'Precision.')
_GRANULARITY = flags.DEFINE_string('granularity', 'per_tensor',
                                   'Weight scale granularity.')


def main(argv):
  del argv
  print(f'jax {jax.__version__} on {jax.devices()[0].platform}, batch '
        f'{_BATCH.value}, {_PRECISION.value} {_GRANULARITY.value}, median of '
        f'{_REPEATS.value}')
  print('| model | forward | ms / batch | img/s | vs float | compile+1st s |')
  print('|---|---|---|---|---|---|')
  for name in _MODELS.value:
    m = random_models.random_model(name, 1000, _BATCH.value)
    module, variables, x = m.module, m.variables, m.x
    qm = m.ptq(_PRECISION.value, granularity=_GRANULARITY.value)
    serve_apply, serve_vars = qm.serve()
    rows = [
        ('float', jax.jit(lambda v, x: module.apply(v, x)), variables),
        ('fake-quant (AQT)', jax.jit(qm.apply_fn()), qm.variables),
        ('served int8 (AQT)', jax.jit(serve_apply), serve_vars),
    ]
    base = None
    for label, fn, v in rows:
      first, t, _ = timing.first_and_median(fn, jax.device_put(v), x,
                                            repeats=_REPEATS.value)
      base = base or t
      print(f'| {name} | {label} | {t * 1e3:.0f} | {_BATCH.value / t:.1f} | '
            f'{t / base:.2f}x | {first:.1f} |', flush=True)


if __name__ == '__main__':
  app.run(main)
