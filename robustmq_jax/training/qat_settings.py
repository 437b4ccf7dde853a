"""The QAT job's config (configs/qat.py), validated once into `QatSettings`.

Fields (see configs/qat.py for the values of each arg):

  model                   model name (robustmq_jax.models.list_models()).
  precision               'w4a4', ... (weights and activations quantized).
  checkpoints.<model>     the float checkpoint QAT starts from.
  quant                   config.quant of the main job: method (dorefa,
                          pact, lsq), bn_fold, calibration, granularity and
                          the recipe quant.qat (steps, batch_size = global
                          batch, learning_rate, warmup_steps, weight_decay,
                          optimizer, label_smoothing, pad_crop).
  data.source             evaluation data ('sample', 'tfds:...', 'folder:...').
  data.train_source       training data ('' = the train split of source).
  data.data_dir           TFDS data folder.
  data.augment            'random_resized_crop' or 'none' (file-backed
                          training sources; robustmq_jax/data/train_stream.py).
  data.workers            Grain decode worker processes (0 = threads).
  data.num_examples       examples of the final evaluation (0 = all).
  evaluate                evaluate the exported model on data.source.
  seed                    calibration, data order, crops.
  checkpoint_every        steps between orbax checkpoints.
  keep_checkpoints        how many recent checkpoints are kept.
  stop_after_steps        stop (with a checkpoint) once this step is done;
                          0 = train to the end. A rerun resumes.
  export_dir              where the quantized checkpoint goes
                          ('' = WORKDIR/export).
  log_every_s             seconds between progress lines.
"""

import dataclasses
import json
from typing import Any

import jax
import ml_collections

from robustmq_jax import config_fields
from robustmq_jax import data as data_lib
from robustmq_jax import models as models_lib
from robustmq_jax import quant
from robustmq_jax import settings as settings_lib
from robustmq_jax.data import train_stream
from robustmq_jax.errors import invalid
from robustmq_jax.errors import UserError
from robustmq_jax.quant import spec as spec_lib

# The module that runs configs/qat.py (its `JOB`).
JOB = 'robustmq_jax.train'

_is_source = settings_lib._is_source  # pylint: disable=protected-access


@dataclasses.dataclass(frozen=True)
class QatSettings:
  """A validated QAT job config. Build it with `from_config`."""
  model: str
  precision: str
  float_checkpoint: str
  spec: quant.QuantSpec
  source: str
  train_source: str
  data_dir: str
  augment: str
  workers: int
  num_examples: int
  evaluate: bool
  seed: int
  checkpoint_every: int
  keep_checkpoints: int
  stop_after_steps: int
  export_dir: str
  log_every_s: float
  config: ml_collections.FrozenConfigDict

  @property
  def steps(self) -> int:
    return self.spec.qat.steps

  @property
  def batch_size(self) -> int:
    return self.spec.qat.batch_size

  def identity(self) -> dict[str, Any]:
    """What determines the trained weights, with the float checkpoint's
    digest (stored with every checkpoint; a workdir holding another
    identity is not resumed; paths may move)."""
    return json.loads(json.dumps({
        'model': self.model, 'spec': self.spec.fingerprint(self.seed),
        'train_source': self.train_source or self.source,
        'augment': self.augment}))


def from_config(config: ml_collections.ConfigDict) -> QatSettings:
  """Validates every field; raises UserError naming the first bad one."""
  config = ml_collections.ConfigDict(config.to_dict())  # A private copy.
  model = config.get('model')
  if model not in models_lib.list_models():
    raise invalid('config.model', model, models_lib.list_models())
  precision = config.get('precision')
  spec = quant.parse_spec(precision, config.get('quant'), 'config.precision')
  if spec.w_bits is None or spec.a_bits is None:
    raise invalid('config.precision', precision,
                  "weights and activations quantized, e.g. 'w4a4'")
  if not spec.is_qat:
    raise invalid('config.quant.method', spec.method, spec_lib.QAT_METHODS)
  checkpoints = config.get('checkpoints') or {}
  path = checkpoints.get(model)
  if not isinstance(path, str) or not path:
    raise UserError(f'config.checkpoints has no folder for model {model!r}; '
                    f'allowed: set --config.checkpoints.{model}=DIR (a '
                    'float checkpoint, see checkpoints/README.md).')
  data = config.get('data')
  if not isinstance(data, ml_collections.ConfigDict):
    raise invalid('config.data', data, 'a group with source, train_source, '
                  'data_dir, augment, workers, num_examples')
  strings = {}
  for f in ('source', 'train_source', 'data_dir'):
    value = data.get(f, '')
    if not isinstance(value, str) or (f == 'source' and not value):
      raise invalid(f'config.data.{f}', value,
                    data_lib.SOURCES if f != 'data_dir' else 'a string')
    if f != 'data_dir' and value and not _is_source(value):
      raise invalid(f'config.data.{f}', value, data_lib.SOURCES)
    strings[f] = value
  train = strings['train_source'] or strings['source']
  if train.startswith('folder:') and not strings['train_source']:
    raise invalid('config.data.train_source', '', "a 'folder:<train dir>' "
                  'when the data source is a folder')
  augment = config_fields.check_choice(config, 'data.augment',
                                       train_stream.AUGMENTATIONS)
  if train == 'sample' and augment != 'none':
    raise invalid('config.data.augment', augment, "'none' for the sample "
                  '(its crops are quant.qat.pad_crop, on device)')
  batch = spec.qat.batch_size
  if batch % jax.device_count():
    raise invalid('config.quant.qat.batch_size', batch, 'a multiple of the '
                  f'device count ({jax.device_count()})')
  evaluate = config.get('evaluate')
  if not isinstance(evaluate, bool):
    raise invalid('config.evaluate', evaluate, (True, False))
  export_dir = config.get('export_dir', '')
  if not isinstance(export_dir, str):
    raise invalid('config.export_dir', export_dir, "a folder or ''")
  return QatSettings(
      model=model, precision=precision, float_checkpoint=path, spec=spec,
      source=strings['source'], train_source=strings['train_source'],
      data_dir=strings['data_dir'], augment=augment,
      workers=config_fields.check_int(config, 'data.workers'),
      num_examples=config_fields.check_int(config, 'data.num_examples'),
      evaluate=evaluate,
      seed=config_fields.check_int(config, 'seed'),
      checkpoint_every=config_fields.check_int(config, 'checkpoint_every',
                                               minimum=1),
      keep_checkpoints=config_fields.check_int(config, 'keep_checkpoints',
                                               minimum=1),
      stop_after_steps=config_fields.check_int(config, 'stop_after_steps'),
      export_dir=export_dir,
      log_every_s=config_fields.check_number(config, 'log_every_s'),
      config=ml_collections.FrozenConfigDict(config))

