"""Quantized checkpoints: integer kernels + scales, in safe formats only.

A folder with two files:

  quant.json           model name, classes, model settings, the QuantSpec,
                       the per-layer plan, the float checkpoint's digest and
                       free-form metadata (accuracy, command, recipe).
  tensors.safetensors  'qweight/<path>': every quantized kernel as its
                       integers q - qmin bit-packed at the layer's bit width
                       (uint8 bytes); 'wscale/<path>': the kernel scales;
                       'quant/<path>/{lhs,rhs}': the static activation
                       scales; 'params/...', 'batch_stats/...': the float
                       leaves (biases, BatchNorm, LayerNorm, embeddings).

Loading rebuilds the kernels as ``q * scale`` (float32), the values the
evaluated model holds, so save -> load is bit-exact.
"""

import hashlib
import json
from typing import Any

import numpy as np
from safetensors import numpy as st_numpy

from robustmq_jax.errors import UserError
from robustmq_jax.quant import plan as plan_lib
from robustmq_jax.quant import reference
from robustmq_jax.results import files

FORMAT = 'robustmq_jax.quant/1'
JSON_FILE = 'quant.json'
TENSORS_FILE = 'tensors.safetensors'


def pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
  """Packs non-negative integers < 2^bits into a dense uint8 byte array."""
  v = np.asarray(values, np.uint16).reshape(-1)
  if bits == 8:
    return v.astype(np.uint8)
  planes = ((v[:, None] >> np.arange(bits, dtype=np.uint16)) & 1)
  return np.packbits(planes.astype(np.uint8).reshape(-1))


def unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
  """Inverse of `pack_bits` (int32 values)."""
  if bits == 8:
    return packed[:count].astype(np.int32)
  planes = np.unpackbits(packed)[:count * bits].reshape(count, bits)
  return np.sum(planes.astype(np.int32) << np.arange(bits), axis=1)


def flatten(tree: Any, prefix: str = '') -> dict[str, np.ndarray]:
  """Nested dict -> {'a/b/c': array}."""
  out = {}
  if hasattr(tree, 'items'):
    for k, v in tree.items():
      out.update(flatten(v, f'{prefix}{k}/'))
  else:
    out[prefix[:-1]] = np.asarray(tree)
  return out


def unflatten(flat: dict[str, np.ndarray]) -> dict[str, Any]:
  """{'a/b/c': array} -> nested dict."""
  out: dict[str, Any] = {}
  for key, value in flat.items():
    node = out
    parts = key.split('/')
    for p in parts[:-1]:
      node = node.setdefault(p, {})
    node[parts[-1]] = value
  return out


def digest(variables: Any) -> str:
  """sha256 of a variable tree (names, dtypes, shapes and bytes)."""
  h = hashlib.sha256()
  for key, value in sorted(flatten(variables).items()):
    a = np.array(value, order='C')
    h.update(f'{key}:{a.dtype.str}:{a.shape};'.encode())
    h.update(a.tobytes())
  return h.hexdigest()


def save(directory: str, *, model: str, num_classes: int,
         model_kwargs: dict[str, Any], spec: dict[str, Any],
         plan: plan_lib.Plan, variables: dict[str, Any],
         meta: dict[str, Any] | None = None) -> None:
  """Writes a quantized checkpoint folder.

  Args:
    directory: output folder (created).
    model: model name.
    num_classes: classifier width.
    model_kwargs: model settings.
    spec: the QuantSpec as a dict (`dataclasses.asdict`).
    plan: the per-layer plan.
    variables: the quantized model's variables ('params' with kernels on
      their grids, optional 'batch_stats', 'quant').
    meta: JSON-serialisable metadata.
  """
  tensors = {}
  params = flatten(variables['params'])
  for path, layer in sorted(plan.items()):
    if layer.rhs is None or not layer.rhs_is_weight:
      continue
    key = f'{path}/kernel'
    w = params.pop(key)
    scale = np.asarray(_kernel_scale(variables, layer), np.float32)
    q = reference.quantize_np(w, scale, layer.rhs.bits)
    if not np.array_equal(reference.dequantize_np(q, scale), w):
      raise ValueError(f'{path}: kernel is not on its grid; snap it first.')
    tensors[f'qweight/{path}'] = pack_bits(q - layer.rhs.qmin, layer.rhs.bits)
    tensors[f'wscale/{path}'] = scale
  for k, v in params.items():
    tensors[f'params/{k}'] = v
  for k, v in flatten(variables.get('batch_stats', {})).items():
    tensors[f'batch_stats/{k}'] = v
  for k, v in flatten(variables.get(plan_lib.QUANT_COLLECTION, {})).items():
    tensors[f'{plan_lib.QUANT_COLLECTION}/{k}'] = v
  # Each file atomically (unique temporary name; any epath location);
  # quant.json last, so a folder with it is complete.
  files.write_atomic(files.path(directory) / TENSORS_FILE, st_numpy.save(
      {k: np.array(v, order='C') for k, v in tensors.items()}))
  doc = {'format': FORMAT, 'model': model, 'num_classes': num_classes,
         'model_kwargs': model_kwargs, 'spec': spec,
         'plan': plan_lib.plan_to_json(plan), 'meta': meta or {}}
  files.write_atomic(files.path(directory) / JSON_FILE, json.dumps(
      doc, indent=1, sort_keys=True, default=_json_default))


def _json_default(o):
  if isinstance(o, (np.integer,)):
    return int(o)
  if isinstance(o, (np.floating,)):
    return float(o)
  if isinstance(o, tuple):
    return list(o)
  raise TypeError(f'not JSON-serialisable: {type(o)}')


def _kernel_scale(variables, layer) -> np.ndarray:
  node = variables[plan_lib.QUANT_COLLECTION]
  for p in plan_lib.scale_module_path(layer).split('/'):
    node = node[p]
  return np.asarray(node[plan_lib.RHS_SCALE])


def read_json(directory: str) -> dict[str, Any]:
  """quant.json of a checkpoint folder (UserError if missing or corrupt)."""
  try:
    doc = json.loads(files.read_bytes(files.path(directory) / JSON_FILE))
  except (OSError, ValueError) as e:
    raise UserError(f'quantized checkpoint {directory!r}: {JSON_FILE} is '
                    f'missing or corrupt ({type(e).__name__}); delete the '
                    'folder to requantize.') from e
  if doc.get('format') != FORMAT:
    raise UserError(f'quantized checkpoint {directory!r} has format '
                    f'{doc.get("format")!r}; expected {FORMAT!r}.')
  return doc


def load(directory: str) -> tuple[dict[str, Any], plan_lib.Plan,
                                  dict[str, Any]]:
  """Reads a quantized checkpoint.

  Returns:
    (doc, plan, variables): the parsed quant.json, the plan, and the
    variables with kernels rebuilt as ``q * scale``.
  """
  doc = read_json(directory)
  plan = plan_lib.plan_from_json(doc['plan'])
  try:
    tensors = st_numpy.load(files.read_bytes(
        files.path(directory) / TENSORS_FILE))
  except (OSError, ValueError) as e:
    raise UserError(f'quantized checkpoint {directory!r}: {TENSORS_FILE} is '
                    f'missing or corrupt ({type(e).__name__}); delete the '
                    'folder to requantize.') from e
  groups: dict[str, dict[str, np.ndarray]] = {}
  for key, value in tensors.items():
    group, rest = key.split('/', 1)
    groups.setdefault(group, {})[rest] = value
  params = dict(groups.get('params', {}))
  for path, packed in groups.get('qweight', {}).items():
    layer = plan[path]
    shape = tuple(layer.rhs_shape)
    q = unpack_bits(packed, layer.rhs.bits, int(np.prod(shape)))
    q = (q + layer.rhs.qmin).reshape(shape)
    scale = groups['wscale'][path]
    params[f'{path}/kernel'] = reference.dequantize_np(q, scale)
  variables = {'params': unflatten(params)}
  for group in ('batch_stats', plan_lib.QUANT_COLLECTION):
    if group in groups:
      variables[group] = unflatten(groups[group])
  return doc, plan, variables
