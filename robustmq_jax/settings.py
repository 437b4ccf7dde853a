"""The run's settings: the config validated once, frozen and typed.

`load('configs/vit_w4.py:sample', overrides)` reads the config file, applies
the `--config.x=y` overrides and validates every field; `from_config` does
the last step for a ConfigDict built in code. The result, `Settings`, is what
the runner and the suites read: typed top-level fields, and the whole config
frozen (`Settings.config`, a FrozenConfigDict) for the per-suite sections
(`config.adversarial`, `config.corruption`, ...), which each suite
validated. List fields are tuples (parsed once, by config_fields.parse_list).
"""

import dataclasses
import os
import types
from typing import Mapping, Sequence

import jax
import ml_collections

from robustmq_jax import config_fields
from robustmq_jax import config_loading
from robustmq_jax import data as data_lib
from robustmq_jax import grid_shard as grid_shard_lib
from robustmq_jax import models as models_lib
from robustmq_jax import precision as precision_lib
from robustmq_jax import quant
from robustmq_jax import suites as suites_lib
from robustmq_jax.defenses import settings as defense_settings
from robustmq_jax.errors import invalid
from robustmq_jax.errors import UserError
from robustmq_jax.results import files

# The main fields, as `--help` lists them.
FIELDS: Mapping[str, str] = {
    'models': 'model names, e.g. resnet18,vit_small_patch16_224',
    'precisions': "fp32, wXaY (X, Y in 2..8), wXa16, 'w4a4:pact' (method)",
    'suites': 'clean, adversarial, corruption, systematic (and more)',
    'data.source': 'sample | tfds:<name>[:<split>] | folder:<path>',
    'data.data_dir': 'TFDS data folder',
    'data.train_source': 'calibration / QAT data (default: the train split)',
    'data.num_examples': 'examples evaluated (0 = all)',
    'batch_size': 'global batch (a multiple of the device count)',
    'seed': 'seed of every random choice',
    'grid_shard': "'I/N': run shard I of N of the grid ('' = all)",
    'checkpoints.<model>': 'float checkpoint folder of <model>',
    'quant.*, adversarial.*, corruption.*, systematic.*':
        'per-part settings, documented in their modules',
}


@dataclasses.dataclass(frozen=True)
class DataSettings:
  source: str
  data_dir: str
  train_source: str
  num_examples: int


@dataclasses.dataclass(frozen=True)
class Settings:
  """A validated run config. Build it with `load` or `from_config`."""
  models: tuple[str, ...]
  precisions: tuple[str, ...]
  suites: tuple[str, ...]
  data: DataSettings
  batch_size: int
  seed: int
  log_every_s: float
  checkpoints: Mapping[str, str]
  checkpoint_hint: str
  config: ml_collections.FrozenConfigDict
  # (I, N): this job runs shard I (1-based) of N of the grid; None = all.
  grid_shard: tuple[int, int] | None = None

  def suite_objects(self) -> list[suites_lib.Suite]:
    return [suites_lib.get_suite(s) for s in self.suites]


def load(spec: str, overrides: Sequence[tuple[str, str]] = ()) -> Settings:
  """Loads 'path[:arg]', applies ('dotted', 'text') overrides, validates."""
  config = config_loading.load(spec)
  config_loading.apply_overrides(config, overrides)
  return from_config(config)


def from_config(config: ml_collections.ConfigDict | Settings) -> Settings:
  """Validates every field; raises UserError naming the first bad one."""
  if isinstance(config, Settings):
    return config
  config = ml_collections.ConfigDict(config.to_dict())  # A private copy.
  models = config_fields.name_list(config, 'models')
  for m in models:
    if m not in models_lib.list_models():
      raise invalid('config.models', m, models_lib.list_models())
  precisions = config_fields.name_list(config, 'precisions')
  for p in precisions:
    # 'w4a4' or with a method suffix ('w4a4:pact', 'w4a4:dq', 'fp32:adv';
    # see robustmq_jax/precision.py).
    precision_lib.validate(p, 'config.precisions')
  suite_names = config_fields.name_list(config, 'suites')
  for s in suite_names:
    if s not in suites_lib.list_suites():
      raise invalid('config.suites', s, suites_lib.list_suites())
  config.models, config.precisions = tuple(models), tuple(precisions)
  config.suites = tuple(suite_names)
  batch_size = config_fields.check_int(config, 'batch_size', minimum=1,
                                       multiple_of=jax.device_count())
  seed = config_fields.check_int(config, 'seed', minimum=0)
  grid_shard = grid_shard_lib.parse(config.get('grid_shard', ''))
  log_every_s = config_fields.check_number(
      ml_collections.ConfigDict({'log_every_s': config.get('log_every_s',
                                                           10.0)}),
      'log_every_s')
  data = config.get('data')
  if not isinstance(data, ml_collections.ConfigDict):
    raise invalid('config.data', data, 'a group with source, data_dir, '
                  'train_source, num_examples')
  num_examples = config_fields.check_int(config, 'data.num_examples',
                                         minimum=0)
  strings = {}
  for f in ('source', 'data_dir', 'train_source'):
    value = data.get(f, '')
    if not isinstance(value, str) or (f == 'source' and not value):
      raise invalid(f'config.data.{f}', value,
                    data_lib.SOURCES if f == 'source' else 'a string')
    strings[f] = value
  for f in ('source', 'train_source'):
    value = strings[f]
    if value and not _is_source(value):
      raise invalid(f'config.data.{f}', value, data_lib.SOURCES)
  checkpoints = config.get('checkpoints') or {}
  for name, path in checkpoints.items():
    if not isinstance(path, str) or not path:
      raise invalid(f'config.checkpoints.{name}', path, 'a folder path')
  for m in models:
    if m not in checkpoints:
      raise UserError(
          f'config.checkpoints has no entry for model {m!r}; allowed: set '
          f'--config.checkpoints.{m}=DIR (a folder written by '
          'scripts/train.py or scripts/convert_weights.py).')
  if any(p != quant.FLOAT_PRECISION for p in precisions):
    quant.validate_config(config.get('quant'))
  if any(precision_lib.is_defense(p) for p in precisions):
    defense_settings.validate_config(config.get('quant'))
  for s in suite_names:
    suites_lib.get_suite(s).validate(config)
  return Settings(
      models=tuple(models), precisions=tuple(precisions),
      suites=tuple(suite_names),
      data=DataSettings(num_examples=num_examples, **strings),
      batch_size=batch_size, seed=seed, log_every_s=log_every_s,
      checkpoints=types.MappingProxyType(dict(checkpoints)),
      checkpoint_hint=str(config.get('checkpoint_hint') or ''),
      config=ml_collections.FrozenConfigDict(config), grid_shard=grid_shard)


def _is_source(text: str) -> bool:
  return text == 'sample' or any(
      text.startswith(p) and len(text) > len(p) for p in ('tfds:', 'folder:'))


def check_workdir(workdir: str) -> None:
  """UserError unless `workdir` is a folder or can become one.

  A bucket path (gs://..., through etils.epath) is taken as given: its
  permissions show at the first write.
  """
  if not workdir:
    raise invalid('--workdir', workdir, 'an output folder path')
  if not files.is_local(workdir):
    return
  path = os.path.abspath(workdir)
  while path and not os.path.exists(path):
    parent = os.path.dirname(path)
    if parent == path:
      break
    path = parent
  if os.path.exists(path) and not os.path.isdir(path):
    what = 'the workdir' if path == os.path.abspath(workdir) else path
    raise invalid('--workdir', workdir,
                  f'a folder ({what} is a regular file)')
  if os.path.isdir(path) and not os.access(path, os.W_OK | os.X_OK):
    raise invalid('--workdir', workdir, f'a writable folder ({path} is not)')
