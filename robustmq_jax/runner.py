"""The main job: models x precisions x suites -> results.jsonl and a report.

`run(settings, workdir)` is what `python -m robustmq_jax.main` calls and what
tests call directly. Every process computes; process 0 alone decides which
cells are already finished (and tells the others) and writes.

Before anything is written or loaded, the run checks every checkpoint
folder, hashes it (results/provenance.py), opens the datasets and lists every
cell of the grid with its full key; finished cells are skipped, the rest are
computed model by model, precision by precision, under one progress display.
"""

import dataclasses
import os
import sys
import time
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

from robustmq_jax import checkpoints
from robustmq_jax import data as data_lib
from robustmq_jax import grid_shard
from robustmq_jax import models as models_lib
from robustmq_jax import precision as precision_lib
from robustmq_jax import progress as progress_lib
from robustmq_jax import quant
from robustmq_jax import settings as settings_lib
from robustmq_jax import suites as suites_lib
from robustmq_jax.defenses import build as defense_build
from robustmq_jax.errors import UserError
from robustmq_jax.evaluation import Evaluator
from robustmq_jax.evaluation import make_mesh
from robustmq_jax.evaluation import replicate
from robustmq_jax.results import latest
from robustmq_jax.results import provenance
from robustmq_jax.results import files
from robustmq_jax.results import ResultStore

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

Settings = settings_lib.Settings
# Validates a ConfigDict into Settings (kept for callers of the old name).
validate = settings_lib.from_config


def resolve_path(path: str) -> str:
  """A path as given (or gs://...), else relative to the repository root."""
  if not files.is_local(path) or os.path.isabs(path) or os.path.exists(path):
    return path
  return os.path.join(REPO_ROOT, path)


def checkpoint_folder(settings: Settings, name: str) -> str:
  """The float checkpoint folder of `name`; UserError if it is missing."""
  given = settings.checkpoints[name]
  path = resolve_path(given)
  if not files.path(path).is_dir():
    hint = settings.checkpoint_hint or (
        'convert pretrained weights with `python scripts/convert_weights.py '
        '--family {torchvision,timm,big_vision} --arch ARCH --input FILE '
        f'--output {given}` (see checkpoints/README.md)')
    raise UserError(f'config.checkpoints.{name}={given!r}: checkpoint '
                    f'folder not found; {hint}.')
  return path


def load_float_model(settings: Settings | ml_collections.ConfigDict,
                     name: str):
  """Returns (module, variables, spec) of the float checkpoint of `name`."""
  settings = settings_lib.from_config(settings)
  module, variables, spec = checkpoints.load(checkpoint_folder(settings, name))
  if spec['model'] != name:
    raise UserError(f'config.checkpoints.{name}='
                    f'{settings.checkpoints[name]!r} holds a '
                    f'{spec["model"]!r} model, not {name!r}.')
  return module, variables, spec


def _float_model_under_test(name, module, variables, info):
  def apply(v, x):
    return module.apply(v, x, train=False)
  # As for the quantized models (`quant.build`): a jitted forward, traced
  # once per input shape for all suites; gradients through the plain one.
  return suites_lib.ModelUnderTest(
      name=name, precision=quant.FLOAT_PRECISION, apply=jax.jit(apply),
      grad_apply=apply,
      variables=variables, image_size=info.image_size, method='float')


def _method(settings: Settings, precision: str) -> str:
  return precision_lib.method_of(precision, settings.config.get('quant'))


def _quant_recipe(settings: Settings, precision: str) -> dict[str, Any] | None:
  """What turns the float weights into this precision's weights."""
  if precision == quant.FLOAT_PRECISION:
    return None
  qconfig = settings.config.get('quant')
  return {'precision': precision, 'method': _method(settings, precision),
          'quant': qconfig.to_dict() if qconfig is not None else None,
          'train_source': settings.data.train_source or settings.data.source,
          'seed': settings.seed}


def _broadcast_todo(todo: np.ndarray) -> np.ndarray:
  """Process 0's view of unfinished cells, shared with every process."""
  if jax.process_count() == 1:
    return todo
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.broadcast_one_to_all(todo))


@dataclasses.dataclass
class _Block:
  """One model x precision of the grid: its cells and which are to do."""
  name: str
  precision: str
  ctx: suites_lib.SuiteContext
  weights: dict[str, Any]
  work: list[tuple[suites_lib.Suite, suites_lib.Cell, dict[str, Any]]]
  todo: np.ndarray


def _plan(settings: Settings, suites, store: ResultStore, contexts,
          float_hashes) -> list[_Block]:
  """Every cell of the grid with its key, and which are not stored yet."""
  blocks = []
  for name in settings.models:
    ctx = contexts[name]
    float_stub = suites_lib.ModelUnderTest(
        name=name, precision=quant.FLOAT_PRECISION, apply=None,
        variables=None, image_size=ctx.dataset.image_size, method='float')
    for precision in settings.precisions:
      # Suites list cells from metadata only: `apply` is None on these stubs.
      stub = float_stub if precision == quant.FLOAT_PRECISION else (
          dataclasses.replace(float_stub, precision=precision,
                              method=_method(settings, precision),
                              float_model=float_stub))
      weights = provenance.weights(float_hashes[name],
                                   _quant_recipe(settings, precision))
      work = []
      for suite in suites:
        for cell in suite.cells(ctx, stub):
          work.append((suite, cell, _row_key(ctx, stub, suite, cell, weights)))
      blocks.append(_Block(name, precision, ctx, weights, work, None))
  if settings.grid_shard:
    blocks = _shard(blocks, *settings.grid_shard)
  for b in blocks:
    b.todo = _broadcast_todo(
        np.asarray([not store.has(k) for _, _, k in b.work], np.int32))
  return blocks


def _shard(blocks: list[_Block], index: int, count: int) -> list[_Block]:
  """The blocks with only shard `index` of `count`'s cells (grid_shard.py)."""
  cells, setup = [], {}
  for b in blocks:
    size = b.ctx.dataset.image_size
    for suite, _, key in b.work:
      group = (b.name, b.precision, suite.name)
      setup[group] = grid_shard.group_setup_cost(b.name, b.precision, size)
      cells.append((group, grid_shard.cell_cost(
          b.name, b.precision, suite.name, key['noise'], key['params'],
          key['n'], image_size=size)))
  keep = iter(grid_shard.select(cells, index, count, setup))
  for b in blocks:
    b.work = [w for w in b.work if next(keep)]
  logging.info('grid shard %d/%d: %d of %d cells', index, count,
               sum(len(b.work) for b in blocks), len(cells))
  return [b for b in blocks if b.work]


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
  # Everything that can fail on the user's input happens before any write.
  float_hashes = {m: provenance.folder_hash(checkpoint_folder(settings, m))
                  for m in settings.models}
  mesh = make_mesh()
  evaluator = Evaluator(mesh, log_every_s=settings.log_every_s)
  cache_dir = os.path.join(workdir, 'cache')
  datasets, contexts = {}, {}
  for name in settings.models:
    size = models_lib.model_info(name).image_size
    if size not in datasets:
      datasets[size] = data_lib.get_dataset(
          settings.data.source, data_dir=settings.data.data_dir or None,
          image_size=size)
    dataset = datasets[size]
    contexts[name] = suites_lib.SuiteContext(
        config=settings.config, dataset=dataset, evaluator=evaluator,
        batch_size=settings.batch_size, seed=settings.seed,
        cache_dir=cache_dir,
        num_examples=min(settings.data.num_examples or dataset.num_examples,
                         dataset.num_examples))
  train_sets = _open_train_sets(settings)
  store = ResultStore(workdir, writer=writer)
  blocks = _plan(settings, suites, store, contexts, float_hashes)
  todo_by_suite = {}
  for b in blocks:
    for (suite, _, _), t in zip(b.work, b.todo):
      todo_by_suite[suite.name] = todo_by_suite.get(suite.name, 0) + int(t)
  done = sum(len(b.work) - int(b.todo.sum()) for b in blocks)
  bar = progress_lib.GridProgress(todo_by_suite, done, enabled=writer)
  evaluator.on_progress = bar.cell_images
  try:
    _compute(settings, suites, blocks, store, bar, evaluator, mesh,
             cache_dir, writer, train_sets)
  finally:
    bar.close()
    store.flush()  # Rows not yet on an object store (gs://).
    _release(suites, evaluator, model_done=True)
  if writer:
    from robustmq_jax import reporting  # pylint: disable=g-import-not-at-top
    with files.local_folder(workdir) as out:  # Copied to gs:// at the end.
      report = reporting.write_report(out, store.rows)
    _print_end(workdir, report, bar, store.rows)
  return store.rows


def _compute(settings: Settings, suites, blocks: list[_Block],
             store: ResultStore, bar: progress_lib.GridProgress, evaluator,
             mesh, cache_dir: str, writer: bool,
             train_sets: dict[int, Any]) -> None:
  """Evaluates the unfinished cells of every block, appending their rows."""
  float_models = {}
  # The model and functions (apply, grad, serve) of the last block computed,
  # and the functions its precisions share (quant.QuantRequest.programs).
  last, programs = None, {}
  for b in blocks:
    if not b.todo.any():
      logging.info('%s %s: all %d cells done, skipped', b.name, b.precision,
                   len(b.work))
      continue
    if last is not None and last[0] != b.name:
      # What the previous model compiled and held goes first.
      _release(suites, evaluator, model_done=True)
      last = None
      programs.clear()
    bar.stage(f'{b.name} {b.precision}: loading')
    info = models_lib.model_info(b.name)
    if b.name not in float_models:
      float_models.clear()  # One model's weights on the devices at a time.
      module, variables, spec = load_float_model(settings, b.name)
      float_models[b.name] = (_float_model_under_test(
          b.name, module, replicate(mesh, variables), info), spec)
    float_mut, float_spec = float_models[b.name]
    evaluator.set_model(info)
    if b.precision == quant.FLOAT_PRECISION:
      mut = float_mut
    else:
      mut = _quantized_model_under_test(
          settings, b.name, float_mut, float_spec, b.precision,
          train_sets[info.image_size], info, cache_dir, mesh, programs)
    fns = (mut.apply, mut.grad_apply, mut.serve_apply)
    if last is not None and any(x is not y for x, y in zip(last[1], fns)):
      # A precision with other programs: the previous one's go. Precisions
      # that differ only in bit widths share theirs (traced, compiled once).
      _release(suites, evaluator, model_done=False)
    last = (b.name, fns)
    # The grids (bit widths as variables) are already in the row's key.
    evaluated = (None if mut is float_mut else provenance.tree_hash(
        {k: v for k, v in mut.variables.items()
         if k != quant.GRID_COLLECTION}) if writer else None)
    for suite in suites:
      cells = [c for (s, c, _), t in zip(b.work, b.todo) if s is suite and t]
      if not cells:
        continue
      bar.stage(f'{b.name} {b.precision} {suite.name}', suite.name)
      start = time.perf_counter()
      for cell, metrics in suite.run(b.ctx, mut, cells):
        row = dict(_row_key(b.ctx, mut, suite, cell, b.weights))
        row.update(metrics)
        seconds = time.perf_counter() - start
        if evaluated:
          row['weights_evaluated'] = evaluated
        row['time_s'] = round(seconds, 3)
        row['versions'] = provenance.versions()
        row['code'] = provenance.code()
        row['timestamp'] = time.strftime('%Y-%m-%dT%H:%M:%S')
        store.append(row)
        bar.cell_done(suite.name, int(metrics.get('n') or 0), seconds)
        logging.info('%s %s %s %s %s: accuracy %.4f (n=%d)', b.name,
                     b.precision, suite.name, cell.noise, dict(cell.params),
                     metrics['accuracy'], metrics['n'])
        start = time.perf_counter()
    mut = float_mut = None  # Only float_models keeps the float weights.


def _release(suites, evaluator, *, model_done: bool) -> None:
  """Drops compiled programs and per-model state before the next block."""
  for suite in suites:
    release = getattr(suite, 'release', None)
    if release is not None:
      release(model_done=model_done)
  release = getattr(evaluator, 'release', None)
  if release is not None:
    release()
  jax.clear_caches()


def _print_end(workdir: str, report: str | None, bar, rows) -> None:
  """The report's paths and the three-line summary, on stdout."""
  paths = [os.path.join(workdir, f) for f in ('report.md', 'report.html')
           if report and (files.path(workdir) / f).exists()]
  lines = bar.summary(latest(rows))
  lines.append('report: ' + ', '.join(paths) if paths else
               f'results: {os.path.join(workdir, "results.jsonl")}')
  print('\n'.join(lines), file=sys.stdout, flush=True)


def _row_key(ctx, model, suite, cell, weights) -> dict[str, Any]:
  return {
      'dataset': ctx.dataset.name, 'model': model.name,
      'precision': model.precision, 'method': model.method,
      'suite': suite.name, 'noise': cell.noise, 'params': dict(cell.params),
      'seed': ctx.seed, 'n': cell.n or ctx.num_examples,
      'weights': weights, 'data': provenance.data_identity(ctx.dataset),
  }


def _open_train_sets(settings: Settings) -> dict[int, Any]:
  """{image size: calibration / QAT split}, opened before the first cell.

  Every precision but fp32 may need it (unless a matching quantized
  checkpoint is found, which is only known once the float weights are
  loaded), so a missing `train_source` or folder fails here, with one
  sentence, not after the float cells ran. Opening lists the files; nothing
  is decoded.
  """
  if all(p == quant.FLOAT_PRECISION for p in settings.precisions):
    return {}
  split = None if settings.data.train_source else 'train'
  opened = {}
  for name in settings.models:
    size = models_lib.model_info(name).image_size
    if size not in opened:
      opened[size] = data_lib.get_dataset(
          settings.data.train_source or settings.data.source, split=split,
          data_dir=settings.data.data_dir or None, image_size=size)
  return opened


def _quantized_model_under_test(settings: Settings, name, float_mut, float_spec,
                                precision, train_set, info, cache_dir, mesh,
                                programs=None):

  def train_arrays():
    ds = train_set
    if hasattr(ds, 'iter_images'):
      # File-backed (ImageNet): decode only what calibration / QAT index.
      return data_lib.lazy_arrays(ds)
    return ds.arrays()

  # A defense ('w4a4:dq') is built by robustmq_jax.defenses; a quantization
  # method in the precision ('w4a4:pact') replaces config.quant.method.
  defense = precision_lib.is_defense(precision)
  base, qconfig = (precision, settings.config.get('quant')) if defense else (
      precision_lib.quant_config(precision, settings.config.get('quant')))
  request = quant.QuantRequest(
      model_name=name, model_kwargs=float_spec.get('model_kwargs', {}),
      num_classes=float_spec['num_classes'],
      float_variables=float_mut.variables, precision=base,
      qconfig=qconfig, train_arrays=train_arrays,
      cache_dir=os.path.join(cache_dir, 'quant'), mesh=mesh,
      seed=settings.seed, programs=programs)
  fields = (defense_build.build if defense else quant.build)(request)
  fields.setdefault('method', _method(settings, precision))
  for k in ('variables', 'serve_variables'):
    if fields.get(k) is not None:
      fields[k] = replicate(mesh, fields[k])
  return suites_lib.ModelUnderTest(
      name=name, precision=precision, float_model=float_mut,
      image_size=info.image_size, **fields)
