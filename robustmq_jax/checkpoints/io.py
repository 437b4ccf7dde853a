"""Our checkpoint format: a folder with model.json and variables.msgpack.

model.json holds everything needed to rebuild the module: the model name, the
number of classes and the model settings (input normalisation, GELU flavour,
...), plus free-form metadata (accuracy, the command that made it). Variables
are serialised with `flax.serialization.msgpack_serialize` (no pickle).
"""

import json
import os
from typing import Any

import flax.serialization
import jax
import numpy as np

from robustmq_jax.errors import UserError

MODEL_FILE = 'model.json'
VARIABLES_FILE = 'variables.msgpack'


def save(directory: str, *, model: str, num_classes: int, variables: Any,
         model_kwargs: dict[str, Any] | None = None,
         meta: dict[str, Any] | None = None) -> None:
  """Writes a checkpoint folder (atomically per file)."""
  os.makedirs(directory, exist_ok=True)
  spec = {'model': model, 'num_classes': num_classes,
          'model_kwargs': model_kwargs or {}, 'meta': meta or {}}
  state = jax.tree.map(np.asarray, jax.device_get(variables))
  _atomic_write(os.path.join(directory, VARIABLES_FILE),
                flax.serialization.msgpack_serialize(
                    flax.serialization.to_state_dict(state)))
  _atomic_write(os.path.join(directory, MODEL_FILE),
                json.dumps(spec, indent=2, sort_keys=True).encode())


def read_spec(directory: str) -> dict[str, Any]:
  path = os.path.join(directory, MODEL_FILE)
  if not os.path.exists(path):
    raise UserError(f'checkpoint={directory!r} has no {MODEL_FILE}; expected a '
                    'folder written by robustmq_jax.checkpoints.save or by '
                    'scripts/convert_weights.py.')
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f'checkpoint={directory!r}: {MODEL_FILE} is corrupt '
                    f'({e}); reconvert or retrain it.') from e


def load(directory: str):
  """Loads a checkpoint folder.

  Returns:
    (module, variables, spec): the Flax module built with the saved settings,
    its variables (numpy arrays), and the parsed model.json.
  """
  from robustmq_jax import models  # pylint: disable=g-import-not-at-top
  spec = read_spec(directory)
  module = models.get_model(spec['model'], num_classes=spec['num_classes'],
                            **spec.get('model_kwargs', {}))
  path = os.path.join(directory, VARIABLES_FILE)
  try:
    with open(path, 'rb') as f:
      variables = flax.serialization.msgpack_restore(f.read())
  except (OSError, ValueError, TypeError) as e:
    raise UserError(f'checkpoint={directory!r}: {VARIABLES_FILE} is missing or '
                    f'corrupt ({type(e).__name__}); reconvert or retrain '
                    'it.') from e
  return module, variables, spec


def _atomic_write(path: str, data: bytes) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'wb') as f:
    f.write(data)
  os.replace(tmp, path)
