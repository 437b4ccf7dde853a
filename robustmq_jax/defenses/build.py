"""Builds the defended models for the runner: `build(request)`.

Methods (precision suffixes, see `settings`):

  'w4a4:dq'       Defensive Quantization: the QAT of `robustmq_jax.quant.qat`
                  (method config.quant.dq.base_method, recipe
                  config.quant.qat) with the orthogonality penalty added.
  'fp32:adv'      the float model after PGD adversarial fine-tuning.
  'w4a4:adv_ptq'  post-training quantization of 'fp32:adv' with the
                  ordinary calibration of config.quant (LAAQ's "uniform"
                  baseline: one clipping rule for every layer).
  'w4a4:laaq'     the same calibration, then every weight layer's kernel and
                  input clipping chosen by `laaq.select`.
  'w4a4:lsq' ...  a quantization method named explicitly: `quant.build`.

Every result is cached as a quantized checkpoint (`robustmq_jax.quant`
format; `robustmq_jax.checkpoints` format for 'fp32:adv'): first looked up
in the shipped folder ``<config.quant.checkpoint_dir>/<model>/<base>_<method>``
(e.g. checkpoints/sample/vit_tiny_patch4_32/w4a4_dq), then in
``<cache_dir>/<model>/<base>_<method>_<hash>``; used only when the float
checkpoint's digest, the quantization spec and the defense's settings all
match, else recomputed and written to the cache.
"""

import dataclasses
import hashlib
import inspect
import json
import os
from typing import Any, Callable

from absl import logging
import jax
import ml_collections
import numpy as np

from robustmq_jax import checkpoints
from robustmq_jax.checkpoints import io as checkpoint_io
from robustmq_jax import models
from robustmq_jax import quant
from robustmq_jax import training
from robustmq_jax.defenses import adversarial_training
from robustmq_jax.defenses import laaq
from robustmq_jax.defenses import orthogonality
from robustmq_jax.defenses import settings as settings_lib
from robustmq_jax.defenses.layers import weight_layers
from robustmq_jax.errors import UserError
from robustmq_jax.quant import calibration
from robustmq_jax.quant import pipeline
from robustmq_jax.quant import plan as plan_lib
from robustmq_jax.quant import qat
from robustmq_jax.quant import storage
from robustmq_jax.quant import spec as spec_lib
from robustmq_jax.quant.spec import parse_spec
from robustmq_jax.quant.spec import QuantSpec
from robustmq_jax.results import files

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _resolve(path: str) -> str:
  if not path or os.path.isabs(path) or os.path.exists(path):
    return path
  return os.path.join(_REPO_ROOT, path)


def _with_method(qconfig, method: str):
  d = qconfig.to_dict() if isinstance(qconfig, ml_collections.ConfigDict) \
      else dict(qconfig or {})
  d['method'] = method
  return d


def _tag(fingerprint: dict[str, Any]) -> str:
  text = json.dumps(fingerprint, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:10]


def _canonical(d: Any) -> Any:
  return json.loads(json.dumps(d, sort_keys=True, default=str))


@dataclasses.dataclass
class _Context:
  request: Any
  spec: QuantSpec | None
  float_vars: dict[str, Any]
  digest: str

  @property
  def name(self) -> str:
    return self.request.model_name

  def module_fn(self):
    r = self.request
    return pipeline.module_fn(r.model_name, r.num_classes, r.model_kwargs)

  def folders(self, label: str, fingerprint: dict[str, Any]) -> list[str]:
    """Shipped folder (if configured), then the cache folder."""
    out = []
    ckpt_dir = (self.spec.checkpoint_dir if self.spec else
                (self.request.qconfig or {}).get('checkpoint_dir', ''))
    if ckpt_dir:
      out.append(os.path.join(_resolve(ckpt_dir), self.name, label))
    out.append(os.path.join(self.request.cache_dir, self.name,
                            f'{label}_{_tag(fingerprint)}'))
    return out


# --------------------------------------------------------- adversarial float --


def _adv_fingerprint(ctx: _Context) -> dict[str, Any]:
  s = settings_lib.adv_settings(ctx.request.qconfig)
  return _canonical({'method': 'adv', 'adv': s.fingerprint(),
                     'seed': ctx.request.seed})


def adversarial_variables(ctx: _Context) -> dict[str, Any]:
  """The PGD fine-tuned float variables ('fp32:adv'), cached."""
  fp = _adv_fingerprint(ctx)
  for d in ctx.folders('fp32_adv', fp):
    if not (files.path(d) / checkpoint_io.MODEL_FILE).is_file():
      continue
    meta = checkpoints.read_spec(d).get('meta', {})
    if meta.get('defense') == fp and meta.get('float_digest') == ctx.digest:
      logging.info('loading adversarially trained model %s', d)
      return pipeline.to_numpy(checkpoints.load(d)[1])
    logging.info('%s does not match this float model / config.quant.adv', d)
  r = ctx.request
  s = settings_lib.adv_settings(r.qconfig)
  images, labels = r.train_arrays()
  module = models.get_model(r.model_name, num_classes=r.num_classes,
                            **dict(r.model_kwargs))
  logging.info('PGD adversarial fine-tuning of %s (%d steps, eps %.4f)',
               r.model_name, s.recipe.steps, s.eps)
  variables, losses = adversarial_training.adversarial_finetune(
      module, ctx.float_vars, images, labels, s,
      key=jax.random.key(r.seed), mesh=r.mesh,
      log_every=max(1, s.recipe.steps // 5))
  variables = pipeline.to_numpy(variables)
  out = ctx.folders('fp32_adv', fp)[-1]
  if jax.process_index() == 0:  # Every process trained it; one writes.
    checkpoints.save(out, model=r.model_name, num_classes=r.num_classes,
                     variables=variables, model_kwargs=dict(r.model_kwargs),
                     meta={'defense': fp, 'float_digest': ctx.digest,
                           'adv_loss_end': float(np.mean(losses[-20:]))
                           if losses else None})
  return variables


# ----------------------------------------------------- quantized defenses --


def _obtain(ctx: _Context, method: str, fingerprint: dict[str, Any],
            make: Callable[[], pipeline.QuantizedModel]
            ) -> pipeline.QuantizedModel:
  """A matching shipped / cached quantized checkpoint, else `make()`."""
  spec_fp = _canonical(ctx.spec.fingerprint(ctx.request.seed))
  label = f'{ctx.spec.precision}_{method}'
  for d in ctx.folders(label, fingerprint):
    if not (files.path(d) / storage.JSON_FILE).is_file():
      continue
    try:
      doc = storage.read_json(d)
    except UserError as e:
      logging.warning('%s', e)
      continue
    meta = doc.get('meta', {})
    if (_canonical(doc.get('spec')) == spec_fp
        and meta.get('defense') == fingerprint
        and meta.get('float_digest') == ctx.digest):
      logging.info('loading %s checkpoint %s', method, d)
      return quant.load(d, ctx.spec)
    logging.info('%s does not match this float model / config; rebuilding', d)
  qmodel = make()
  qmodel.meta['method'] = method
  if jax.process_index() == 0:  # Every process built it; one writes.
    quant.save(ctx.folders(label, fingerprint)[-1], qmodel,
               ctx.request.seed,
               meta={'defense': fingerprint, 'float_digest': ctx.digest})
  return qmodel


def _fit_with_penalty(penalty):
  """Calls QAT with a penalty (the `penalty` keyword once QAT has one)."""
  if 'penalty' in inspect.signature(
      qat.quantization_aware_training).parameters:
    return lambda *a, **kw: qat.quantization_aware_training(
        *a, penalty=penalty, **kw)

  # Until quant.qat forwards a penalty to training.fit, add it to the fit
  # that QAT calls, for the duration of the call only.
  def run(*a, **kw):
    fit = training.fit
    training.fit = lambda *fa, **fkw: fit(*fa, **dict(fkw, penalty=penalty))
    try:
      return qat.quantization_aware_training(*a, **kw)
    finally:
      training.fit = fit

  return run


def _dq(ctx: _Context) -> pipeline.QuantizedModel:
  s = settings_lib.dq_settings(ctx.request.qconfig)
  fp = _canonical({'method': 'dq', 'dq': s})
  r = ctx.request

  def make():
    mfn = ctx.module_fn()
    size = models.model_info(r.model_name).image_size
    layers = weight_layers(mfn, ctx.float_vars, (size, size, 3))
    penalty = orthogonality.make_penalty(layers, beta=s['beta'],
                                         form=s['form'])
    images, labels = r.train_arrays()
    plan, variables, meta = _fit_with_penalty(penalty)(
        mfn, ctx.float_vars, images, labels, ctx.spec, seed=r.seed,
        mesh=r.mesh)
    # Of the snapped (evaluated) kernels, before and after training.
    dev = orthogonality.per_layer_deviation(variables['params'], layers,
                                            s['form'])
    meta.update(dq=s, orthogonality_before=float(np.mean(list(
        orthogonality.per_layer_deviation(ctx.float_vars['params'], layers,
                                          s['form']).values()))),
                orthogonality_after=float(np.mean(list(dev.values()))))
    return pipeline.QuantizedModel(r.model_name, r.num_classes,
                                   dict(r.model_kwargs), ctx.spec, plan,
                                   variables, meta)

  return _obtain(ctx, 'dq', fp, make)


def _adv_based(ctx: _Context, method: str) -> pipeline.QuantizedModel:
  r = ctx.request
  adv_fp = _adv_fingerprint(ctx)
  if method == 'laaq':
    s, num_batches, batch_size = settings_lib.laaq_settings(r.qconfig)
    fp = _canonical({'method': 'laaq', 'laaq': dataclasses.asdict(s),
                     'num_batches': num_batches, 'batch_size': batch_size,
                     'adv': adv_fp})
  else:
    fp = _canonical({'method': method, 'adv': adv_fp})

  def make():
    adv_vars = adversarial_variables(ctx)
    images, labels = r.train_arrays()
    if method == 'adv_ptq':
      return pipeline.quantize_model(
          r.model_name, r.num_classes, dict(r.model_kwargs), adv_vars,
          ctx.spec, images, labels, seed=r.seed, mesh=r.mesh)
    mfn = ctx.module_fn()
    cal = calibration.calibrate(mfn, adv_vars, images, ctx.spec, seed=r.seed)
    rng = np.random.default_rng(r.seed)
    idx = rng.permutation(len(images))[:num_batches * batch_size]
    batches = [images[idx[i:i + batch_size]].astype(np.float32) / 255.0
               for i in range(0, len(idx), batch_size)]
    result = laaq.select(mfn, adv_vars, batches, cal.plan, s, seed=r.seed)
    scales = {p: dict(v) for p, v in cal.scales.items()}
    for p, sc in result.scales.items():
      scales.setdefault(p, {}).update(sc)
    variables = {k: v for k, v in adv_vars.items() if k != 'params'}
    variables['params'] = pipeline.snap_kernels(cal.plan, adv_vars['params'],
                                                scales)
    variables[plan_lib.QUANT_COLLECTION] = pipeline.quant_collection(
        cal.plan, scales)
    meta = {'calibration': ctx.spec.calibration, 'laaq': dataclasses.asdict(
        s), 'laaq_layers': laaq.summary_rows(result), 'laaq_e0': result.e0,
            'laaq_bound': result.bound,
            'laaq_bound_uniform': result.bound_uniform}
    return pipeline.QuantizedModel(r.model_name, r.num_classes,
                                   dict(r.model_kwargs), ctx.spec, cal.plan,
                                   variables, meta)

  return _obtain(ctx, method, fp, make)


def _fields(qmodel: pipeline.QuantizedModel, method: str) -> dict[str, Any]:
  apply = qmodel.apply_fn('fake')
  fields = {'apply': apply, 'variables': qmodel.variables,
            'grad_apply': apply, 'method': method, 'serve_apply': None,
            'serve_variables': None}
  if qmodel.spec.eval_int8:
    fields['serve_apply'], fields['serve_variables'] = qmodel.serve()
  return fields


def build(request: quant.QuantRequest) -> dict[str, Any]:
  """ModelUnderTest fields for a precision with a method suffix.

  Args:
    request: the runner's request; `request.precision` is 'w4a4:dq',
      'fp32:adv', ... (see `settings.split_precision`).

  Returns:
    apply, variables, grad_apply, serve_apply, serve_variables, method.
  """
  settings_lib.validate_precision(request.precision)
  base, method = settings_lib.split_precision(request.precision)
  if method is None or method in spec_lib.METHODS:
    sub = dataclasses.replace(
        request, precision=base,
        qconfig=request.qconfig if method is None else _with_method(
            request.qconfig, method))
    fields = quant.build(sub)
    fields['method'] = method or fields.get('method')
    return fields
  float_vars = pipeline.to_numpy(request.float_variables)
  digest = storage.digest(float_vars)
  if method == 'adv':
    ctx = _Context(request, None, float_vars, digest)
    module = models.get_model(request.model_name,
                              num_classes=request.num_classes,
                              **dict(request.model_kwargs))
    apply = lambda v, x: module.apply(v, x, train=False)
    return {'apply': apply, 'variables': adversarial_variables(ctx),
            'grad_apply': apply, 'method': 'adv', 'serve_apply': None,
            'serve_variables': None}
  spec_method = ('ptq' if method in ('laaq', 'adv_ptq') else
                 settings_lib.dq_settings(request.qconfig)['base_method'])
  spec = parse_spec(base, _with_method(request.qconfig, spec_method))
  ctx = _Context(request, spec, float_vars, digest)
  qmodel = _dq(ctx) if method == 'dq' else _adv_based(ctx, method)
  return _fields(qmodel, method)
