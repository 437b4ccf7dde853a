"""The QAT job: calibrate, train data-parallel with checkpoints, export.

`run(settings, workdir)` is what `python -m robustmq_jax.train` calls:

1. Inputs first: the float checkpoint, the training (and evaluation) data,
   the workdir; any bad input stops the job before anything is written.
2. Calibration (the QAT starting scales and plan, `quant.qat.calibrate`;
   it reads only its calibration batches), or, when WORKDIR/checkpoints
   holds a checkpoint of the same run, its calibration and state.
3. Training: `training.make_train_step` on the QAT model (`quant.qat`), one
   global-view jit over the mesh, state replicated, batch sharded on the
   data axis, fed by `data.train_stream` (batch of step s from (seed, s));
   an orbax checkpoint every `checkpoint_every` steps (and at a stop).
4. Export (process 0): the quantized checkpoint
   `<export_dir>/<model>/<precision>_<method>` (quant.json +
   tensors.safetensors, fingerprinted by the spec, the seed and the float
   checkpoint), the folder the main job reads by name with
   `--config.quant.checkpoint_dir=<export_dir>` and the same config.quant;
   then its test accuracy (fake-quant and AQT integer) on data.source.
"""

import dataclasses
import os
import sys
import time
from typing import Any

from absl import logging
import jax
import numpy as np

from robustmq_jax import checkpoints as checkpoints_lib
from robustmq_jax import data as data_lib
from robustmq_jax import models as models_lib
from robustmq_jax import quant
from robustmq_jax import runner
from robustmq_jax import settings as settings_lib
from robustmq_jax import training
from robustmq_jax.data import pipeline
from robustmq_jax.data import train_stream
from robustmq_jax.errors import UserError
from robustmq_jax.evaluation import Evaluator
from robustmq_jax.evaluation import mesh as mesh_lib
from robustmq_jax.quant import pipeline as quant_pipeline
from robustmq_jax.quant import plan as plan_lib
from robustmq_jax.quant import qat
from robustmq_jax.quant import storage
from robustmq_jax.suites import clean
from robustmq_jax.training import checkpointing
from robustmq_jax.training import progress
from robustmq_jax.training.qat_settings import QatSettings


def _scales_to_json(scales: dict[str, dict[str, Any]]) -> dict[str, Any]:
  return {path: {side: np.asarray(v, np.float32).tolist()
                 for side, v in s.items()} for path, s in scales.items()}


def _scales_from_json(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
  return {path: {side: np.asarray(v, np.float32) for side, v in s.items()}
          for path, s in doc.items()}


def _float_model(settings: QatSettings):
  """(variables, model.json) of the float checkpoint; UserError if bad."""
  given = settings.float_checkpoint
  folder = runner.resolve_path(given)
  field = f'config.checkpoints.{settings.model}'
  if not os.path.isdir(folder):
    raise UserError(f'{field}={given!r}: checkpoint folder not found; '
                    'allowed: a float checkpoint folder (see '
                    'checkpoints/README.md).')
  _, variables, spec = checkpoints_lib.load(folder)
  if spec['model'] != settings.model:
    raise UserError(f'{field}={given!r} holds a {spec["model"]!r} model, '
                    f'not {settings.model!r}.')
  return quant.to_numpy(variables), spec


def _datasets(settings: QatSettings, image_size: int):
  """(training split, evaluation split or None); UserError if missing."""
  train_source = settings.train_source or settings.source
  split = None if settings.train_source else 'train'
  data_dir = settings.data_dir or None
  options = pipeline.DecodeOptions(workers=settings.workers)
  train = data_lib.get_dataset(train_source, split=split, data_dir=data_dir,
                               image_size=image_size)
  if hasattr(train, 'decode_options'):
    train.decode_options = options
  test = None
  if settings.evaluate:
    test = data_lib.get_dataset(settings.source, data_dir=data_dir,
                                image_size=image_size)
  return train, test


def export_folder(settings: QatSettings, workdir: str) -> str:
  """Where the quantized checkpoint goes (the main job's naming)."""
  root = settings.export_dir or os.path.join(workdir, 'export')
  return os.path.join(root, settings.model,
                      quant.checkpoint_name(settings.spec))


def main_job_overrides(settings: QatSettings, workdir: str) -> list[str]:
  """`--config.*` flags that make the main job load this run's export.

  The main job uses a shipped checkpoint when its config.quant (and seed
  and float checkpoint) fingerprint the same: these flags set every
  config.quant field that differs from the study configs' defaults
  (`quant.default_config('sample')` on the sample, `('')` otherwise).
  """
  root = os.path.abspath(settings.export_dir or os.path.join(workdir,
                                                             'export'))
  m = settings.model
  flags = [f'--config.models={m}',
           f'--config.checkpoints.{m}={settings.float_checkpoint}',
           f'--config.precisions=fp32,{settings.precision}',
           f'--config.seed={settings.seed}',
           f'--config.quant.checkpoint_dir={root}']
  base = quant.default_config('sample' if settings.source == 'sample'
                              else '').to_dict()
  mine = settings.config.quant.to_dict()

  def diff(a, b, prefix):
    for k, v in sorted(b.items()):
      if k in ('checkpoint_dir', 'eval_int8'):
        continue
      if isinstance(v, dict):
        diff(a.get(k, {}), v, f'{prefix}{k}.')
      elif a.get(k) != v:
        flags.append(f'--config.quant.{prefix}{k}={v}')

  diff(base, mine, '')
  return flags


def _evaluate(qmodel: quant.QuantizedModel, dataset, settings: QatSettings,
              mesh) -> dict[str, float]:
  """Top-1 of the exported model (fake-quant and AQT integer), sharded."""
  n = min(settings.num_examples or dataset.num_examples,
          dataset.num_examples)
  evaluator = Evaluator(mesh, log_every_s=settings.log_every_s)
  evaluator.set_model(models_lib.model_info(settings.model))
  local = mesh_lib.local_batch_size(mesh, settings.batch_size)

  def accuracy(apply, variables):
    batches = data_lib.iter_batches(
        dataset, local, ids=np.arange(n),
        process_index=jax.process_index(),
        process_count=jax.process_count())
    s = evaluator.sums(clean.correct_fn(apply), batches,
                       variables=mesh_lib.replicate(mesh, variables),
                       total=n, desc='QAT export')
    return s['correct'] / s['n']

  out = {'test_accuracy': accuracy(qmodel.apply_fn(), qmodel.variables),
         'test_examples': n}
  if settings.spec.eval_int8:
    out['test_accuracy_int8'] = accuracy(*qmodel.serve())
  return out


def _finished(folder: str, fingerprint: dict[str, Any], digest: str) -> bool:
  """Whether `folder` holds this run's export already."""
  if not os.path.isfile(os.path.join(folder, storage.JSON_FILE)):
    return False
  doc = storage.read_json(folder)
  return (doc.get('spec') == fingerprint and
          doc.get('meta', {}).get('float_digest') == digest)


@dataclasses.dataclass
class _Run:
  """What a run reads, opened and checked before anything is written."""
  settings: QatSettings
  workdir: str
  mesh: jax.sharding.Mesh
  module_fn: Any
  float_vars: dict[str, Any]
  fspec: dict[str, Any]
  train_ds: Any
  test_ds: Any
  identity: dict[str, Any]
  out_dir: str
  writer: bool

  @property
  def image_size(self) -> int:
    return models_lib.model_info(self.settings.model).image_size


def run(settings: QatSettings, workdir: str) -> str | None:
  """Trains (or resumes) and exports; returns the export folder.

  Args:
    settings: the validated config (`qat_settings.from_config`).
    workdir: run folder: checkpoints/ (orbax), export/ (default export).

  Returns:
    The quantized checkpoint folder, or None when the run stopped at
    `stop_after_steps` before the last step (rerun to resume).
  """
  settings_lib.check_workdir(workdir)
  if '://' not in workdir:
    workdir = os.path.abspath(workdir)  # orbax wants absolute paths.
  size = models_lib.model_info(settings.model).image_size
  float_vars, fspec = _float_model(settings)
  train_ds, test_ds = _datasets(settings, size)
  digest = storage.digest(float_vars)
  r = _Run(settings, workdir, mesh_lib.make_mesh(),
           quant_pipeline.module_fn(settings.model, fspec['num_classes'],
                                    fspec.get('model_kwargs', {})),
           float_vars, fspec, train_ds, test_ds,
           dict(settings.identity(), float_digest=digest),
           export_folder(settings, workdir), jax.process_index() == 0)
  ckpt = checkpointing.Checkpoints(os.path.join(workdir, 'checkpoints'),
                                   keep=settings.keep_checkpoints)
  try:
    if (ckpt.latest_step() == settings.steps and
        _finished(r.out_dir, r.identity['spec'], digest)):
      if r.writer:
        print(f'already trained and exported: {r.out_dir}', flush=True)
      return r.out_dir
    start, plan, scales, losses, seconds = _resume_or_calibrate(r, ckpt)
    qs = qat.setup(r.module_fn, settings.spec, plan, scales, size)
    state, losses, seconds = _train(r, ckpt, qs, start, losses, seconds)
    if state is None:
      return None
    return _export(r, qs, state, losses, seconds)
  finally:
    ckpt.close()


def _resume_or_calibrate(r: _Run, ckpt: checkpointing.Checkpoints):
  """(start step, plan, initial scales, loss log, seconds spent so far)."""
  start = ckpt.latest_step() or 0
  if not start:
    images, _ = (data_lib.lazy_arrays(r.train_ds)
                 if hasattr(r.train_ds, 'iter_images') else
                 r.train_ds.arrays())
    plan, scales = qat.calibrate(r.module_fn, r.float_vars, images,
                                 r.settings.spec, seed=r.settings.seed)
    return 0, plan, scales, [], 0.0
  meta = ckpt.meta(start)
  if meta['identity'] != r.identity:
    changed = sorted(k for k in r.identity
                     if meta['identity'].get(k) != r.identity[k])
    raise UserError(
        f'--workdir={r.workdir!r} holds checkpoints of another QAT run '
        f'({", ".join(changed)} differ); allowed: the same config to '
        'resume, or a new workdir.')
  logging.info('resuming %s from step %d', r.workdir, start)
  return (start, plan_lib.plan_from_json(meta['plan']),
          _scales_from_json(meta['scales']), meta['losses'], meta['seconds'])


def _train(r: _Run, ckpt: checkpointing.Checkpoints, qs: qat.QatSetup,
           start: int, losses: list[list[float]], seconds: float):
  """Steps start..stop with checkpoints; (state or None if stopped early,
  loss log, seconds)."""
  settings = r.settings
  recipe = qat.recipe(settings.spec)
  tx = recipe.make_optimizer()
  variables = qs.initial_variables(r.float_vars)
  replicated = mesh_lib.replicated(r.mesh)
  state = jax.device_put({'variables': variables,
                          'opt_state': tx.init(variables['params'])},
                         replicated)
  if start:
    state = ckpt.state(start, state)
  train_step = training.make_train_step(qs.module, recipe, tx)
  base_key = jax.random.key(settings.seed)

  def step_fn(state, x, y, step):
    v, o, loss = train_step(state['variables'], state['opt_state'], x, y,
                            jax.random.fold_in(base_key, step))
    return {'variables': v, 'opt_state': o}, loss

  data = mesh_lib.data_sharding(r.mesh)
  step_fn = jax.jit(step_fn, in_shardings=(replicated, data, data, None),
                    out_shardings=(replicated, replicated))
  total = settings.steps
  stop = min(settings.stop_after_steps or total, total)
  stream = train_stream.TrainStream(
      r.train_ds, global_batch=settings.batch_size, seed=settings.seed,
      augment=settings.augment, process_index=jax.process_index(),
      process_count=jax.process_count())
  bar = progress.StepProgress(start, total, settings.batch_size,
                     every_s=settings.log_every_s, enabled=r.writer)
  pending = []  # Device losses since the last checkpoint.
  t0 = time.perf_counter()
  step = start
  for x, y in stream.batches(start, stop):
    x, y = mesh_lib.to_global(r.mesh, {'x': x, 'y': y}).values()
    state, loss = step_fn(state, x, y, np.int32(step))
    pending.append(loss)
    step += 1
    if step % settings.checkpoint_every == 0 or step == stop:
      window = float(np.mean(jax.device_get(pending)))
      losses.append([step, window])
      pending = []
      ckpt.save(step, state, {
          'identity': r.identity, 'step': step,
          'plan': plan_lib.plan_to_json(qs.plan),
          'scales': _scales_to_json(qs.scales), 'losses': losses,
          'seconds': seconds + time.perf_counter() - t0})
      bar.update(step, window, force=True)
    else:
      bar.update(step, None)
  seconds += time.perf_counter() - t0
  if stop < total:
    if r.writer:
      print(f'stopped after step {stop} of {total} (config.stop_after_steps)'
            f'; rerun the same command to resume.', flush=True)
    return None, losses, seconds
  return state, losses, seconds


def _export(r: _Run, qs: qat.QatSetup, state, losses, seconds) -> str:
  """The quantized checkpoint (process 0 writes), evaluated when asked."""
  settings, spec = r.settings, r.settings.spec
  qmodel = quant.QuantizedModel(
      settings.model, r.fspec['num_classes'],
      dict(r.fspec.get('model_kwargs', {})), spec, qs.plan,
      qat.export(qs, jax.device_get(state['variables']), r.image_size),
      qat.meta(spec, qs, seconds, losses[0][1] if losses else None,
               losses[-1][1] if losses else None))
  meta = {'float_digest': r.identity['float_digest'],
          'train_source': r.identity['train_source'],
          'augment': settings.augment, 'command': _command(),
          'devices': jax.device_count()}
  if r.test_ds is not None:
    meta.update(_evaluate(qmodel, r.test_ds, settings, r.mesh))
  if r.writer:
    quant.save(r.out_dir, qmodel, settings.seed, meta=meta)
    _print_end(settings, r.workdir, r.out_dir, meta)
  return r.out_dir


def _command() -> str:
  """The command line that ran this process."""
  if sys.argv[0].endswith(os.path.join('robustmq_jax', 'train.py')):
    return ' '.join(['python -m robustmq_jax.train'] + sys.argv[1:])
  return ' '.join(['python'] + sys.argv)


def _print_end(settings, workdir, out_dir, meta) -> None:
  acc = ''
  if 'test_accuracy' in meta:
    acc = f' test accuracy {meta["test_accuracy"]:.4f}'
    if 'test_accuracy_int8' in meta:
      acc += f' (AQT integer {meta["test_accuracy_int8"]:.4f})'
    acc += f' on {meta["test_examples"]} {settings.source} images;'
  flags = ' '.join(main_job_overrides(settings, workdir))
  print(f'quantized checkpoint: {out_dir};{acc}\nthe main job loads it '
        f'with: python -m robustmq_jax.main --config=CONFIG --workdir=DIR '
        f'{flags}', flush=True)
