r"""Quantizes the sample checkpoints and ships them for the quickstart.

  python scripts/quantize_sample.py                     # LSQ, the paper grid
  python scripts/quantize_sample.py --method=ptq --precisions=w4a4 --dry

For each model and precision, quantizes checkpoints/sample/<model>/fp32 with
`config.quant = robustmq_jax.quant.default_config('sample')` (the settings
configs/*:sample use; LSQ by default) and writes
checkpoints/sample/<model>/<precision>_<method>: the checkpoint the main job
would otherwise compute and cache. QAT methods run the QAT job
(`robustmq_jax.train`, configs/qat.py:sample: streamed batches, orbax
checkpoints in --workdir, so an interrupted run resumes); PTQ calibrates in
memory. Prints the simulated (fake-quant) and served (AQT integer) test
accuracy; both go into quant.json's meta.
"""

import os
import sys
import tempfile
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from robustmq_jax import checkpoints
from robustmq_jax import config_loading
from robustmq_jax import quant
from robustmq_jax import train
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
_WORKDIR = flags.DEFINE_string('workdir', '', 'QAT runs folder (orbax '
                               'checkpoints; default: a temporary folder).')
_DRY = flags.DEFINE_bool('dry', False, 'Report accuracy, write nothing.')


def accuracy(apply, variables, images, labels, batch=128) -> float:
  f = jax.jit(lambda v, x: jnp.argmax(apply(v, x.astype(jnp.float32) / 255.0),
                                      -1))
  hits = 0
  for i in range(0, len(images), batch):
    hits += int(np.sum(np.asarray(f(variables, images[i:i + batch]))
                       == labels[i:i + batch]))
  return hits / len(images)


def _qat(name: str, precision: str, qconfig, runs: str, root: str) -> None:
  """One QAT job (configs/qat.py:sample with this model, precision, quant)."""
  config = config_loading.load('configs/qat.py:sample')
  config.model, config.precision, config.seed = name, precision, _SEED.value
  config.checkpoints[name] = os.path.join(_ROOT.value, name, 'fp32')
  config.quant = qconfig
  config.export_dir = root
  # One run folder per method too: the QAT job refuses to resume another
  # spec's checkpoints.
  out = train.run(config, os.path.join(runs, name,
                                       f'{precision}_{qconfig.method}'))
  meta = storage.read_json(out)['meta']
  print(f'{name} {precision} {qconfig.method}: test accuracy '
        f'{meta["test_accuracy"]:.4f} (served int: '
        f'{meta["test_accuracy_int8"]:.4f}), {meta["qat_seconds"]:.0f} s, '
        f'loss {meta["qat_loss_start"]} -> {meta["qat_loss_end"]}',
        flush=True)


def main(argv):
  del argv
  qconfig = quant.default_config('sample')
  if _METHOD.value:
    qconfig.method = _METHOD.value
  if _STEPS.value >= 0:
    qconfig.qat.steps = _STEPS.value
  runs = _WORKDIR.value or tempfile.mkdtemp(prefix='quantize_sample_')
  train_x, train_y = SampleDataset('train').arrays()
  test_x, test_y = SampleDataset('test').arrays()
  for name in _MODELS.value:
    fdir = os.path.join(_ROOT.value, name, 'fp32')
    _, fvars, fspec = checkpoints.load(fdir)
    fvars = quant.to_numpy(fvars)
    digest = storage.digest(fvars)
    for precision in _PRECISIONS.value:
      spec = quant.parse_spec(precision, qconfig)
      if spec.is_qat:
        _qat(name, precision, qconfig,
             runs, os.path.join(runs, 'dry') if _DRY.value else _ROOT.value)
        continue
      start = time.perf_counter()
      qm = quant.quantize_model(name, fspec['num_classes'],
                                fspec.get('model_kwargs', {}), fvars, spec,
                                train_x, train_y, seed=_SEED.value)
      seconds = time.perf_counter() - start
      acc = accuracy(qm.apply_fn(), qm.variables, test_x, test_y)
      serve_apply, serve_vars = qm.serve()
      acc_int = accuracy(serve_apply, serve_vars, test_x, test_y)
      print(f'{name} {precision} {spec.method}: test accuracy {acc:.4f} '
            f'(served int: {acc_int:.4f}), {seconds:.0f} s', flush=True)
      if _DRY.value:
        continue
      out = os.path.join(_ROOT.value, name, quant.checkpoint_name(spec))
      quant.save(out, qm, _SEED.value, meta={
          'float_digest': digest, 'test_accuracy': acc,
          'test_accuracy_int8': acc_int, 'seconds': round(seconds, 1),
          'command': ' '.join(['python'] + sys.argv)})


if __name__ == '__main__':
  app.run(main)
