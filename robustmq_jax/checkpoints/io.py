"""Our checkpoint format: a folder with model.json and variables.msgpack.

model.json holds everything needed to rebuild the module: the model name, the
number of classes and the model settings (input normalisation, GELU flavour,
...), plus free-form metadata (accuracy, the command that made it). Variables
are serialised with `flax.serialization.msgpack_serialize` (no pickle).
"""

import json
from typing import Any

import flax.serialization
import jax
import numpy as np

from robustmq_jax.errors import UserError
from robustmq_jax.results import files

MODEL_FILE = 'model.json'
VARIABLES_FILE = 'variables.msgpack'


def save(directory: str, *, model: str, num_classes: int, variables: Any,
         model_kwargs: dict[str, Any] | None = None,
         meta: dict[str, Any] | None = None) -> None:
  """Writes a checkpoint folder (atomically per file; any epath location)."""
  spec = {'model': model, 'num_classes': num_classes,
          'model_kwargs': model_kwargs or {}, 'meta': meta or {}}
  state = jax.tree.map(np.asarray, jax.device_get(variables))
  files.write_atomic(files.path(directory) / VARIABLES_FILE,
                     flax.serialization.msgpack_serialize(
                         flax.serialization.to_state_dict(state)))
  files.write_atomic(files.path(directory) / MODEL_FILE,
                     json.dumps(spec, indent=2, sort_keys=True))


def read_spec(directory: str) -> dict[str, Any]:
  path = files.path(directory) / MODEL_FILE
  if not path.exists():
    raise UserError(f'checkpoint={directory!r} has no {MODEL_FILE}; expected a '
                    'folder written by robustmq_jax.checkpoints.save or by '
                    'scripts/convert_weights.py.')
  try:
    return json.loads(path.read_text())
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
  try:
    variables = flax.serialization.msgpack_restore(
        files.read_bytes(files.path(directory) / VARIABLES_FILE))
  except (OSError, ValueError, TypeError) as e:
    raise UserError(f'checkpoint={directory!r}: {VARIABLES_FILE} is missing or '
                    f'corrupt ({type(e).__name__}); reconvert or retrain '
                    'it.') from e
  return module, variables, spec
