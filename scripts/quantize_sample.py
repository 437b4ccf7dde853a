r"""Quantizes the sample checkpoints and ships them for the quickstart.

  python scripts/quantize_sample.py                     # LSQ, the paper grid
  python scripts/quantize_sample.py --method=ptq --precisions=w4a4 --dry

For each model and precision, quantizes checkpoints/sample/<model>/fp32 with
`config.quant = robustmq_jax.quant.default_config('sample')` (the settings
configs/*:sample use; LSQ by default) and writes
checkpoints/sample/<model>/<precision>_<method>: the same checkpoint the main
job would otherwise compute and cache. Prints the simulated (fake-quant) and
served (AQT integer) test accuracy; both go into quant.json's meta.
"""

import os
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from robustmq_jax import checkpoints
from robustmq_jax import quant
from robustmq_jax.data.sample import SampleDataset
from robustmq_jax.quant import storage

_MODELS = flags.DEFINE_list('models', ['resnet20_cifar', 'vit_tiny_patch4_32'],
                            'Sample models.')
_PRECISIONS = flags.DEFINE_list('precisions', ['w8a8', 'w6a6', 'w4a4', 'w2a2'],
                                'Precisions.')
_METHOD = flags.DEFINE_string('method', '', 'Override config.quant.method.')
_STEPS = flags.DEFINE_integer('steps', -1, 'Override the QAT steps.')
_ROOT = flags.DEFINE_string('root', 'checkpoints/sample', 'Checkpoint root.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed (the main job uses config.seed '
                             '= 0).')
_DRY = flags.DEFINE_bool('dry', False, 'Report accuracy, write nothing.')


def accuracy(apply, variables, images, labels, batch=128) -> float:
  f = jax.jit(lambda v, x: jnp.argmax(apply(v, x.astype(jnp.float32) / 255.0),
                                      -1))
  hits = 0
  for i in range(0, len(images), batch):
    hits += int(np.sum(np.asarray(f(variables, images[i:i + batch]))
                       == labels[i:i + batch]))
  return hits / len(images)


def main(argv):
  del argv
  qconfig = quant.default_config('sample')
  if _METHOD.value:
    qconfig.method = _METHOD.value
  if _STEPS.value >= 0:
    qconfig.qat.steps = _STEPS.value
  train_x, train_y = SampleDataset('train').arrays()
  test_x, test_y = SampleDataset('test').arrays()
  for name in _MODELS.value:
    fdir = os.path.join(_ROOT.value, name, 'fp32')
    _, fvars, fspec = checkpoints.load(fdir)
    fvars = quant.to_numpy(fvars)
    digest = storage.digest(fvars)
    for precision in _PRECISIONS.value:
      spec = quant.parse_spec(precision, qconfig)
      start = time.perf_counter()
      qm = quant.quantize_model(name, fspec['num_classes'],
                                fspec.get('model_kwargs', {}), fvars, spec,
                                train_x, train_y, seed=_SEED.value)
      seconds = time.perf_counter() - start
      acc = accuracy(qm.apply_fn(), qm.variables, test_x, test_y)
      serve_apply, serve_vars = qm.serve()
      acc_int = accuracy(serve_apply, serve_vars, test_x, test_y)
      print(f'{name} {precision} {spec.method}: test accuracy {acc:.4f} '
            f'(served int: {acc_int:.4f}), {seconds:.0f} s, loss '
            f'{qm.meta.get("qat_loss_start")} -> '
            f'{qm.meta.get("qat_loss_end")}', flush=True)
      if _DRY.value:
        continue
      out = os.path.join(_ROOT.value, name, quant.checkpoint_name(spec))
      quant.save(out, qm, _SEED.value, meta={
          'float_digest': digest, 'test_accuracy': acc,
          'test_accuracy_int8': acc_int, 'seconds': round(seconds, 1),
          'command': ' '.join(['python'] + sys.argv)})


if __name__ == '__main__':
  app.run(main)
