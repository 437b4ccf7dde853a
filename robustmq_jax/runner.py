"""The main job: models x precisions x suites -> results.jsonl and a report.

`run(config, workdir)` is what `python -m robustmq_jax.main` calls and what
tests call directly. Every process computes; process 0 alone decides which
cells are already finished (and tells the others) and writes.
"""

import dataclasses
import os
import time
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

from robustmq_jax import checkpoints
from robustmq_jax import data as data_lib
from robustmq_jax import models as models_lib
from robustmq_jax import quant
from robustmq_jax import settings as settings_lib
from robustmq_jax import suites as suites_lib
from robustmq_jax.defenses import build as defense_build
from robustmq_jax.defenses import settings as defense_settings
from robustmq_jax.errors import UserError
from robustmq_jax.evaluation import Evaluator
from robustmq_jax.evaluation import make_mesh
from robustmq_jax.evaluation import replicate
from robustmq_jax.results import provenance
from robustmq_jax.results import ResultStore

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


Settings = settings_lib.Settings
# Validates a ConfigDict into Settings (kept for callers of the old name).
validate = settings_lib.from_config


def resolve_path(path: str) -> str:
  """A path as given, else relative to the repository root."""
  if os.path.isabs(path) or os.path.exists(path):
    return path
  return os.path.join(REPO_ROOT, path)


def load_float_model(settings: Settings, name: str):
  """Returns (module, variables, spec) of the float checkpoint of `name`."""
  ckpts = settings.checkpoints
  if name not in ckpts:
    raise UserError(
        f'config.checkpoints has no entry for model {name!r}; set '
        f'--config.checkpoints.{name}=DIR (a folder written by '
        'scripts/train.py or scripts/convert_weights.py).')
  path = resolve_path(ckpts[name])
  if not os.path.isdir(path):
    hint = settings.checkpoint_hint or (
        'convert pretrained weights with `python scripts/convert_weights.py '
        '--family {torchvision,timm,big_vision} --arch ARCH --input FILE '
        f'--output {ckpts[name]}` (see checkpoints/README.md)')
    raise UserError(f'config.checkpoints.{name}={ckpts[name]!r}: checkpoint '
                    f'folder not found; {hint}.')
  module, variables, spec = checkpoints.load(path)
  if spec['model'] != name:
    raise UserError(f'config.checkpoints.{name}={ckpts[name]!r} holds a '
                    f'{spec["model"]!r} model, not {name!r}.')
  return module, variables, spec


def _float_model_under_test(name, module, variables, info):
  def apply(v, x):
    return module.apply(v, x, train=False)
  return suites_lib.ModelUnderTest(
      name=name, precision=quant.FLOAT_PRECISION, apply=apply,
      variables=variables, image_size=info.image_size, method='float')


def _method(settings: Settings, precision: str) -> str:
  return defense_settings.method_of(precision, settings.config.get('quant'))


def _broadcast_todo(todo: np.ndarray) -> np.ndarray:
  """Process 0's view of unfinished cells, shared with every process."""
  if jax.process_count() == 1:
    return todo
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.broadcast_one_to_all(todo))


def run(config: ml_collections.ConfigDict | Settings,
        workdir: str) -> list[dict[str, Any]]:
  """Evaluates every model x precision x suite cell not already stored.

  Args:
    config: the run settings (`settings.load`), or a config (see configs/)
      to validate first.
    workdir: output folder: results.jsonl, report.md, results.csv, plots,
      cache/.

  Returns:
    All rows of results.jsonl (this run's and earlier ones).
  """
  settings = settings_lib.from_config(config)
  settings_lib.check_workdir(workdir)
  suites = settings.suite_objects()
  writer = jax.process_index() == 0
  store = ResultStore(workdir, writer=writer)
  mesh = make_mesh()
  evaluator = Evaluator(mesh, log_every_s=settings.log_every_s)
  source = settings.data.source
  data_dir = settings.data.data_dir or None
  cache_dir = os.path.join(workdir, 'cache')
  datasets = {}

  for name in settings.models:
    info = models_lib.model_info(name)
    if info.image_size not in datasets:
      datasets[info.image_size] = data_lib.get_dataset(
          source, data_dir=data_dir, image_size=info.image_size)
    dataset = datasets[info.image_size]
    ctx = suites_lib.SuiteContext(
        config=settings.config, dataset=dataset, evaluator=evaluator,
        batch_size=settings.batch_size, seed=settings.seed,
        cache_dir=cache_dir,
        num_examples=min(settings.data.num_examples or dataset.num_examples,
                         dataset.num_examples))
    float_mut = None
    # Suites list cells from metadata only: `apply` is None on these stubs.
    float_stub = suites_lib.ModelUnderTest(
        name=name, precision=quant.FLOAT_PRECISION, apply=None,
        variables=None, image_size=info.image_size, method='float')
    for precision in settings.precisions:
      stub = float_stub if precision == quant.FLOAT_PRECISION else (
          dataclasses.replace(float_stub, precision=precision,
                              method=_method(settings, precision),
                              float_model=float_stub))
      work = []
      for suite in suites:
        for cell in suite.cells(ctx, stub):
          key = _row_key(dataset, stub, suite, cell, ctx)
          work.append((suite, cell, key))
      todo = _broadcast_todo(
          np.asarray([not store.has(k) for _, _, k in work], np.int32))
      if not todo.any():
        logging.info('%s %s: all %d cells done, skipped', name, precision,
                     len(work))
        continue
      if float_mut is None:
        module, variables, spec = load_float_model(settings, name)
        float_mut = _float_model_under_test(
            name, module, replicate(mesh, variables), info)
        float_spec = spec
      if precision == quant.FLOAT_PRECISION:
        mut = float_mut
      else:
        mut = _quantized_model_under_test(
            settings, name, float_mut, float_spec, precision, source, data_dir,
            info, cache_dir, mesh)
      for suite in suites:
        cells = [c for (s, c, _), t in zip(work, todo) if s is suite and t]
        if not cells:
          continue
        start = time.perf_counter()
        for cell, metrics in suite.run(ctx, mut, cells):
          row = dict(_row_key(dataset, mut, suite, cell, ctx))
          row.update(metrics)
          row['time_s'] = round(time.perf_counter() - start, 3)
          row['versions'] = provenance.versions()
          row['timestamp'] = time.strftime('%Y-%m-%dT%H:%M:%S')
          store.append(row)
          logging.info('%s %s %s %s %s: accuracy %.4f (n=%d)', name,
                       precision, suite.name, cell.noise, dict(cell.params),
                       metrics['accuracy'], metrics['n'])
          start = time.perf_counter()
  if writer:
    from robustmq_jax import reporting  # pylint: disable=g-import-not-at-top
    reporting.write_report(workdir, store.rows)
  return store.rows


def _row_key(dataset, model, suite, cell, ctx) -> dict[str, Any]:
  return {
      'dataset': dataset.name, 'model': model.name,
      'precision': model.precision, 'method': model.method,
      'suite': suite.name, 'noise': cell.noise, 'params': dict(cell.params),
      'seed': ctx.seed, 'n': cell.n or ctx.num_examples,
  }


def _quantized_model_under_test(settings: Settings, name, float_mut, float_spec,
                                precision, source, data_dir, info, cache_dir,
                                mesh):
  train_source = settings.data.train_source or source

  def train_arrays():
    split = None if settings.data.train_source else 'train'
    ds = data_lib.get_dataset(train_source, split=split, data_dir=data_dir,
                              image_size=info.image_size)
    return ds.arrays()

  request = quant.QuantRequest(
      model_name=name, model_kwargs=float_spec.get('model_kwargs', {}),
      num_classes=float_spec['num_classes'],
      float_variables=float_mut.variables, precision=precision,
      qconfig=settings.config.get('quant'), train_arrays=train_arrays,
      cache_dir=os.path.join(cache_dir, 'quant'), mesh=mesh,
      seed=settings.seed)
  # Precisions naming their method ('w4a4:dq') go through the defenses.
  build = (defense_build.build if defense_settings.has_method(precision)
           else quant.build)
  fields = build(request)
  fields.setdefault('method', _method(settings, precision))
  for k in ('variables', 'serve_variables'):
    if fields.get(k) is not None:
      fields[k] = replicate(mesh, fields[k])
  return suites_lib.ModelUnderTest(
      name=name, precision=precision, float_model=float_mut,
      image_size=info.image_size, **fields)
