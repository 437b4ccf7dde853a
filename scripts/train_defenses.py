r"""Trains / selects the defended sample models and ships them as checkpoints.

  python scripts/train_defenses.py                       # everything
  python scripts/train_defenses.py --models=vit_tiny_patch4_32 \
      --precisions=fp32:adv,w4a4:laaq

For every model and defense precision of `configs/defenses.py:sample` this
builds exactly what the main job would (same config, seed and float
checkpoint, so the fingerprints match), in a scratch cache, then moves each
result to checkpoints/sample/<model>/<base>_<method> (e.g. w4a4_dq,
fp32_adv), where `robustmq_jax.defenses.build` finds it. Precisions whose
method is a plain quantization method (w4a4:lsq) are left to
scripts/quantize_sample.py / the main job.
"""

import importlib.util
import os
import shutil
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging

from robustmq_jax import config_fields
from robustmq_jax import data as data_lib
from robustmq_jax import models
from robustmq_jax import quant
from robustmq_jax import runner
from robustmq_jax.defenses import build as build_lib
from robustmq_jax.defenses import settings
from robustmq_jax.evaluation import make_mesh

_MODELS = flags.DEFINE_list('models', [], 'Models (default: the config\'s).')
_PRECISIONS = flags.DEFINE_list(
    'precisions', [], 'Defense precisions (default: every one of the config '
    'with a defense method).')
_CONFIG = flags.DEFINE_string('config', 'configs/defenses.py',
                              'Config file (its "sample" variant is used).')
_OUT = flags.DEFINE_string('output', 'checkpoints/sample',
                           'Folder receiving <model>/<base>_<method>.')


def _load_config(path: str):
  spec = importlib.util.spec_from_file_location('defenses_config',
                                                runner.resolve_path(path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config('sample')


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  config = _load_config(_CONFIG.value)
  model_names = _MODELS.value or config_fields.name_list(config, 'models')
  precisions = _PRECISIONS.value or [
      p for p in config_fields.name_list(config, 'precisions')
      if settings.split_precision(p)[1] in settings.METHODS]
  mesh = make_mesh()
  out_root = runner.resolve_path(_OUT.value)
  for name in model_names:
    info = models.model_info(name)
    module, variables, spec = runner.load_float_model(config, name)
    del module
    train = data_lib.get_dataset('sample', split='train',
                                 image_size=info.image_size)
    for precision in precisions:
      settings.validate_precision(precision)
      scratch = tempfile.mkdtemp(prefix='defenses_')
      request = quant.QuantRequest(
          model_name=name, model_kwargs=spec.get('model_kwargs', {}),
          num_classes=spec['num_classes'], float_variables=variables,
          precision=precision, qconfig=config.quant,
          train_arrays=train.arrays, cache_dir=scratch, mesh=mesh,
          seed=config.seed)
      start = time.perf_counter()
      build_lib.build(request)
      seconds = time.perf_counter() - start
      folder = os.path.join(scratch, name)
      made = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
      for entry in made:
        label = entry.rsplit('_', 1)[0]  # strip the fingerprint tag
        dest = os.path.join(out_root, name, label)
        if os.path.exists(dest):
          shutil.rmtree(dest)
        shutil.move(os.path.join(folder, entry), dest)
        print(f'{name} {precision}: {label} -> {dest} ({seconds:.0f} s)')
      if not made:
        print(f'{name} {precision}: shipped checkpoint already matches')
      shutil.rmtree(scratch, ignore_errors=True)
  print('command:', ' '.join(['python'] + sys.argv))


if __name__ == '__main__':
  app.run(main)
