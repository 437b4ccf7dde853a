"""Where a row comes from: weights, data, code.

A cell's key names the weights it evaluated and the data it read, so a rerun
with other weights (a retrained or repointed checkpoint) or other data adds
new rows beside the old ones instead of skipping:

  weights: {'float': <content hash of the float checkpoint folder>,
            'quant': <hash of everything that derives the quantized weights
                      from them: precision, method, config.quant,
                      calibration data, seed> (None for the float model)}
  data:    {'source', 'size', 'image_size', 'preprocessing'}

Both are known before any weights are loaded, so finished cells are still
skipped without loading anything. Rows of a quantized model also record
`weights_evaluated`, the content hash of the quantized variables it ran
(`tree_hash`), and every row carries `versions` (libraries) and `code`
(this project's version and git commit).
"""

import functools
import hashlib
import importlib.metadata
import json
import os
from typing import Any, Mapping

from robustmq_jax.results import files as files_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
# How data/ turns a decoded image into the model input (data/preprocess.py).
PREPROCESSING = 'res256crop224-pil-bilinear;model-size-kept'
_HASH_CHARS = 16


@functools.cache
def versions() -> dict[str, str]:
  out = {}
  for pkg in ('robustmq_jax', 'jax', 'jaxlib', 'flax', 'aqtp', 'numpy',
              'pillow', 'opencv-python-headless', 'dm-pix'):
    try:
      out[pkg] = importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
      pass
  return out


@functools.cache
def code() -> dict[str, str]:
  """This project's version and git commit (read from .git, no subprocess)."""
  out = {'version': versions().get('robustmq_jax', 'unknown')}
  commit = _git_commit(os.path.join(REPO_ROOT, '.git'))
  if commit:
    out['commit'] = commit
  return out


def _git_commit(git_dir: str) -> str | None:
  try:
    with open(os.path.join(git_dir, 'HEAD')) as f:
      head = f.read().strip()
    if not head.startswith('ref: '):
      return head
    ref = head[5:]
    path = os.path.join(git_dir, ref)
    if os.path.exists(path):
      with open(path) as f:
        return f.read().strip()
    with open(os.path.join(git_dir, 'packed-refs')) as f:
      for line in f:
        parts = line.split()
        if len(parts) == 2 and parts[1] == ref:
          return parts[0]
  except OSError:
    pass
  return None


def _listing(folder: str) -> list[tuple[str, int, Any]]:
  """(relative path, size, mtime) of every file under `folder`, sorted."""
  out = []
  if files_lib.is_local(folder):
    for dirpath, dirnames, names in os.walk(folder):
      dirnames.sort()
      for n in sorted(names):
        path = os.path.join(dirpath, n)
        st = os.stat(path)
        out.append((os.path.relpath(path, folder), st.st_size,
                    st.st_mtime_ns))
    return out
  root = files_lib.path(folder)  # gs://... through etils.epath.
  top = None
  for dirpath, _, names in root.walk():
    top = top or os.fspath(dirpath)  # Object stores name it without gs://.
    rel_dir = os.path.relpath(os.fspath(dirpath), top)
    for n in names:
      rel = os.path.normpath(os.path.join(rel_dir, n))
      st = (root / rel).stat()
      out.append((rel, st.length, st.mtime))
  return sorted(out)


def folder_hash(folder: str) -> str:
  """Content hash of every file under `folder` (names and bytes).

  `folder` is local or an epath location (gs://...). Memoized on (path,
  name, size, mtime in ns) of the files, so a rerun in the same process
  reads nothing twice; a changed file changes the hash.
  """
  listing = _listing(folder)
  return _hash_files(
      os.path.abspath(folder) if files_lib.is_local(folder) else folder,
      tuple(listing))


# A pure memo (a few strings per checkpoint folder), bounded; no run state.
@functools.lru_cache(maxsize=256)
def _hash_files(folder: str, listing: tuple[tuple[str, int, Any], ...]
                ) -> str:
  h = hashlib.sha256()
  for rel, _, _ in listing:
    h.update(rel.encode() + b'\0')
    with files_lib.path(folder).joinpath(rel).open('rb') as f:
      for block in iter(lambda: f.read(1 << 20), b''):
        h.update(block)
    h.update(b'\0')
  return h.hexdigest()[:_HASH_CHARS]


def tree_hash(tree: Any) -> str | None:
  """Content hash of a pytree of arrays (names, dtypes, shapes, bytes).

  None where the arrays are not all on this process (multi-host shards).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  h = hashlib.sha256()
  for path, leaf in leaves:
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      return None
    value = np.asarray(jax.device_get(leaf))
    h.update(f'{jax.tree_util.keystr(path)}|{value.dtype}|{value.shape}'
             .encode())
    h.update(np.ascontiguousarray(value).tobytes())
  return h.hexdigest()[:_HASH_CHARS]


def digest(obj: Any) -> str:
  """Short hash of a JSON-able object (keys sorted)."""
  text = json.dumps(obj, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:_HASH_CHARS]


def weights(float_hash: str, quant_recipe: Mapping[str, Any] | None
            ) -> dict[str, str | None]:
  """The key's `weights` field: float hash, and the quantized derivation."""
  return {'float': float_hash,
          'quant': None if quant_recipe is None else digest(
              {'float': float_hash, **quant_recipe})}


def data_identity(dataset: Any) -> dict[str, Any]:
  """The key's `data` field: which examples, preprocessed how."""
  return {'source': dataset.name, 'size': int(dataset.num_examples),
          'image_size': int(dataset.image_size),
          'preprocessing': PREPROCESSING}
