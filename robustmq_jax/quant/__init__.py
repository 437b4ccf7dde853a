"""Quantization of the benchmark's models (MQBench academic setting, AQT).

The runner's contract:

  validate_precision(precision, field) -> None       # UserError if bad
  validate_config(qconfig) -> None                    # config.quant
  build(request: QuantRequest) -> dict of ModelUnderTest fields:
      apply, variables, grad_apply, serve_apply, serve_variables, method

Library use (any model of `robustmq_jax.models`):

  spec = quant.parse_spec('w4a4', quant.default_config())
  qmodel = quant.quantize_model(name, num_classes, model_kwargs, variables,
                                spec, images, labels)
  logits = qmodel.apply_fn()(qmodel.variables, x)      # fake-quant + STE
  serve_apply, serve_vars = qmodel.serve()              # AQT int8 serving
  quant.save(path, qmodel); quant.load(path)

Modules: spec (QuantSpec), plan (per-layer bits/signs), reference (plain-jnp
oracle), aqt_config / aqt_backend (AQT layers, straight-through conv),
compat (the jax.core.get_aval shim), calibration (PTQ), qat (DoReFa, PACT,
LSQ), pipeline (QuantizedModel), storage (checkpoints). A second backend
(Qwix) would add its own `Ops` subclass and a `spec.backend` value; models and
the runner only see `build` and `Ops`.
"""

import dataclasses
import hashlib
import json
import os
from typing import Any, Callable

from absl import logging
import jax
import numpy as np

from robustmq_jax.errors import UserError
from robustmq_jax.quant import storage
from robustmq_jax.quant.plan import GRID_COLLECTION
from robustmq_jax.quant.pipeline import QuantizedModel
from robustmq_jax.quant.pipeline import quantize_model
from robustmq_jax.quant.pipeline import to_numpy
from robustmq_jax.quant.spec import default_config
from robustmq_jax.quant.spec import FLOAT_PRECISION
from robustmq_jax.quant.spec import parse_precision
from robustmq_jax.quant.spec import parse_spec
from robustmq_jax.quant.spec import QuantSpec
from robustmq_jax.results import files

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


@dataclasses.dataclass
class QuantRequest:
  """What the runner hands to the quantization layer for one precision.

  Attributes:
    model_name: name in `robustmq_jax.models.list_models()`.
    model_kwargs: settings to rebuild the module (normalisation, GELU, ...).
    num_classes: classifier width.
    float_variables: the float model's variables.
    precision: 'w8a8', 'w4a16', ...
    qconfig: `config.quant` (method, granularity, calibration, QAT recipe,
      checkpoint_dir).
    train_arrays: () -> (uint8 NHWC images, int32 labels) of the training /
      calibration split (called lazily, only when nothing is cached).
    cache_dir: folder for calibrated / fine-tuned checkpoints
      (<cache_dir>/<model>/<precision>_<method>_<fingerprint>/).
    mesh: the one device mesh (QAT is data-parallel over it).
    seed: run seed (calibration sampling, QAT).
    programs: the run's apply functions by `QuantizedModel.program_key`, or
      None. Precisions of a model that differ only in bit widths then get
      the same function objects, whose compiled programs (keyed on them by
      the suites and JAX) are traced and compiled once.
  """
  model_name: str
  model_kwargs: dict[str, Any]
  num_classes: int
  float_variables: Any
  precision: str
  qconfig: Any
  train_arrays: Callable[[], tuple[np.ndarray, np.ndarray]]
  cache_dir: str
  mesh: Any
  seed: int = 0
  programs: dict[Any, Any] | None = None


def validate_precision(precision: str, field: str = 'config.precisions'):
  """UserError unless `precision` is 'fp32', 'w<W>a<A>' or 'w<W>a16'."""
  parse_precision(precision, field)


def validate_config(qconfig) -> None:
  """UserError naming the first bad field of `config.quant`."""
  parse_spec('w8a8', qconfig)


def _fingerprint_json(spec: QuantSpec, seed: int) -> str:
  return json.dumps(spec.fingerprint(seed), sort_keys=True)


def _resolve(path: str) -> str:
  if (not path or not files.is_local(path) or os.path.isabs(path)
      or os.path.exists(path)):
    return path
  return os.path.join(_REPO_ROOT, path)


def checkpoint_name(spec: QuantSpec) -> str:
  """Folder name of a quantized checkpoint: '<precision>_<method>'."""
  return f'{spec.precision}_{spec.method}'


def _matches(directory: str, fingerprint: str, float_digest: str) -> bool:
  if not (files.path(directory) / storage.JSON_FILE).is_file():
    return False
  try:
    doc = storage.read_json(directory)
  except UserError as e:
    logging.warning('%s', e)
    return False
  same_spec = json.dumps(doc.get('spec'), sort_keys=True) == fingerprint
  same_float = doc.get('meta', {}).get('float_digest') == float_digest
  if not (same_spec and same_float):
    logging.info('quantized checkpoint %s does not match (spec %s, float '
                 'checkpoint %s); requantizing', directory, same_spec,
                 same_float)
  return same_spec and same_float


def save(directory: str, qmodel: QuantizedModel, seed: int = 0,
         meta: dict[str, Any] | None = None) -> None:
  """Writes `qmodel` as a quantized checkpoint (see `storage`)."""
  storage.save(directory, model=qmodel.model_name,
               num_classes=qmodel.num_classes,
               model_kwargs=qmodel.model_kwargs,
               spec=json.loads(_fingerprint_json(qmodel.spec, seed)),
               plan=qmodel.plan, variables=qmodel.variables,
               meta=dict(qmodel.meta, **(meta or {})))


def load(directory: str, spec: QuantSpec | None = None) -> QuantizedModel:
  """Reads a quantized checkpoint written by `save`."""
  doc, plan, variables = storage.load(directory)
  if spec is None:
    s = dict(doc['spec'])
    s.pop('seed', None)
    qat = s.pop('qat', None)
    spec = parse_spec(s.pop('precision'), dict(s, qat=qat or {}))
  return QuantizedModel(doc['model'], doc['num_classes'],
                        dict(doc['model_kwargs']), spec, plan, variables,
                        dict(doc['meta']))


def obtain(request: QuantRequest, spec: QuantSpec) -> QuantizedModel:
  """The quantized model: a matching shipped/cached checkpoint, or a new one.

  Looks in `<spec.checkpoint_dir>/<model>/<precision>_<method>` (shipped),
  then in the cache; a checkpoint is used only when its spec fingerprint and
  the float checkpoint's digest both match. Otherwise calibrates / fine-tunes
  and writes the result to the cache.
  """
  float_vars = to_numpy(request.float_variables)
  digest = storage.digest(float_vars)
  fingerprint = _fingerprint_json(spec, request.seed)
  tag = hashlib.sha256(fingerprint.encode()).hexdigest()[:10]
  name = checkpoint_name(spec)
  candidates = []
  if spec.checkpoint_dir:
    candidates.append(os.path.join(_resolve(spec.checkpoint_dir),
                                   request.model_name, name))
  cached = os.path.join(request.cache_dir, request.model_name,
                        f'{name}_{tag}')
  candidates.append(cached)
  for d in candidates:
    if _matches(d, fingerprint, digest):
      logging.info('loading quantized checkpoint %s', d)
      return load(d, spec)
  images, labels = request.train_arrays()
  qmodel = quantize_model(
      request.model_name, request.num_classes, request.model_kwargs,
      float_vars, spec, images, labels, seed=request.seed, mesh=request.mesh)
  if jax.process_index() == 0:  # Every process computed it; one writes.
    save(cached, qmodel, request.seed, meta={'float_digest': digest})
  return qmodel


def build(request: QuantRequest) -> dict[str, Any]:
  """ModelUnderTest fields of `request.model_name` at `request.precision`.

  Returns:
    apply / grad_apply: the fake-quant AQT model (its gradients are
    straight-through, conv included); variables; serve_apply /
    serve_variables: AQT's converted/served integer model (None when
    config.quant.eval_int8 is False); method.
  """
  spec = parse_spec(request.precision, request.qconfig)
  if spec.is_float:
    qmodel = quantize_model(request.model_name, request.num_classes,
                            request.model_kwargs, request.float_variables,
                            spec)
  else:
    qmodel = obtain(request, spec)
  # The grids as variables: the programs compiled for one bit width serve
  # the model's other precisions (same structure, different values).
  programs = {} if request.programs is None else request.programs
  key = qmodel.program_key()
  grad_apply = programs.setdefault(('grad',) + key,
                                   qmodel.apply_fn('fake', traced_grid=True))
  # Forward-only paths get a jitted copy: JAX traces it once per input shape
  # and reuses it in every suite's program. Never differentiated through
  # the jit: AQT's custom VJPs close over the traced grids, which would
  # then leak out of the inner trace.
  apply = programs.setdefault(('fake',) + key, jax.jit(grad_apply))
  fields = {'apply': apply, 'variables': qmodel.grid_variables(),
            'grad_apply': grad_apply,
            'method': 'float' if spec.is_float else spec.method,
            'serve_apply': None, 'serve_variables': None}
  if spec.eval_int8 and not spec.is_float:
    # CONVERT too: traced once for all bit widths.
    convert = programs.setdefault(('convert',) + key, qmodel.convert_fn())
    serve_apply, fields['serve_variables'] = qmodel.serve(convert)
    fields['serve_apply'] = programs.setdefault(('serve',) + key,
                                                jax.jit(serve_apply))
  return fields


__all__ = [
    'FLOAT_PRECISION', 'GRID_COLLECTION', 'QuantRequest', 'QuantSpec',
    'QuantizedModel', 'build',
    'default_config', 'load', 'obtain', 'parse_precision', 'parse_spec',
    'quantize_model', 'save', 'validate_config', 'validate_precision',
]
