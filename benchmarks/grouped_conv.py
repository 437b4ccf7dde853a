r"""Grouped / depthwise convolutions on XLA:CPU: the op vs per-tap products.

  python benchmarks/grouped_conv.py                    # the 32x32 twins
  python benchmarks/grouped_conv.py --models=mobilenet_v2,regnetx_600mf \
      --batch=8

For each model (random He-normal weights, float32, inference-mode BatchNorm)
times, after compilation and side by side in one process, the jitted
forward and the jitted value-and-grad of the cross-entropy with respect to
the input and the parameters (what an attack step and a training step
differentiate), each as XLA compiles it (grouped convolutions as the
`conv_general_dilated` op, which XLA:CPU runs as a naive loop) and as
`robustmq_jax.xla_cpu.conv_layout.canonical_convs` re-emits it (grouped
convolutions as per-tap matrix products, `xla_cpu.grouped_conv`). Prints
the median times, the speed-up (op / rewritten) and the largest relative
difference of the results (float32 rounding; the tests check 1e-10 in
float64). ResNet-20 (no grouped convolution) is the control: the rewrite
must leave it as it was.
"""

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from robustmq_jax import models
from robustmq_jax.models import random_init
from robustmq_jax.xla_cpu import conv_layout
import timing  # benchmarks/timing.py, beside this script.

_MODELS = flags.DEFINE_list(
    'models', ['mobilenet_v2_cifar', 'regnetx_cifar', 'resnet20_cifar'],
    'Models.')
_BATCH = flags.DEFINE_integer('batch', 64, 'Batch size.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed runs (median).')


def _rel_diff(a, b) -> float:
  return max(float(jnp.max(jnp.abs(x - y)) / (jnp.max(jnp.abs(x)) + 1e-30))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def main(argv):
  del argv
  print(f'jax {jax.__version__} on {jax.devices()[0].platform}, batch '
        f'{_BATCH.value}, median of {_REPEATS.value}')
  print('| model | program | op ms | rewritten ms | speed-up | '
        'compile s (op / rewritten) | max rel diff |')
  print('|---|---|---|---|---|---|---|')
  for name in _MODELS.value:
    size = models.model_info(name).image_size
    module = models.get_model(name, num_classes=10)
    variables = random_init.he_normal_variables(module, size)
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.uniform(size=(_BATCH.value, size, size, 3)),
                    jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, _BATCH.value))

    def forward(v, z):
      return module.apply(v, z)

    def loss(v, z):
      logp = jax.nn.log_softmax(module.apply(v, z))
      return -jnp.mean(jnp.take_along_axis(logp, y[:, None], 1))

    value_and_grad = jax.value_and_grad(loss, argnums=(0, 1))
    for label, fn in (('forward', forward),
                      ('value_and_grad', value_and_grad)):
      c0, t0, r0 = timing.first_and_median(jax.jit(fn), variables, x,
                                           repeats=_REPEATS.value)
      c1, t1, r1 = timing.first_and_median(
          jax.jit(conv_layout.canonical_convs(fn)), variables, x,
          repeats=_REPEATS.value)
      t0, t1 = 1e3 * t0, 1e3 * t1  # Milliseconds in the table.
      print(f'| {name} | {label} | {t0:.0f} | {t1:.0f} | {t0 / t1:.2f} | '
            f'{c0:.1f} / {c1:.1f} | {_rel_diff(r0, r1):.1e} |', flush=True)


if __name__ == '__main__':
  app.run(main)
