"""Workdir files through `etils.epath`: local folders, gs://, s3://, ...

Everything a run writes (results.jsonl, the quantized-model cache, reports,
checkpoints) goes through these helpers, so a workdir may be a local folder
or a bucket (`--workdir=gs://bucket/run`; gs:// needs `gcsfs`, which
`etils.epath` uses through fsspec). Only process 0 writes; the helpers do
not check that, their callers do.

Atomic writes: a file appears whole or not at all. Locally it is written to
a temporary name unique per process (host, pid, a random suffix), flushed,
then renamed over the target, so two processes writing the same file never
share a temporary path and a reader never sees a half-written file. On an
object store an object is only visible once its upload completes, so it is
written in place (a rename there would be a copy).
"""

import contextlib
import os
import shutil
import socket
import tempfile
import uuid
from typing import Iterator

from etils import epath

PathLike = str | os.PathLike


def path(p: PathLike) -> epath.Path:
  """`p` as an epath.Path ('gs://...' or a local path)."""
  return epath.Path(p)


def is_local(p: PathLike) -> bool:
  """True for a path of this machine's file system (not gs://, s3://, ...)."""
  return '://' not in os.fspath(p)


def _temp_name(target: epath.Path) -> epath.Path:
  unique = f'{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}'
  return target.parent / f'.{target.name}.tmp-{unique}'


def write_atomic(target: PathLike, data: bytes | str) -> None:
  """Writes `data` to `target` whole (see the module docstring)."""
  target = path(target)
  target.parent.mkdir(parents=True, exist_ok=True)
  blob = data.encode() if isinstance(data, str) else data
  if not is_local(target):
    target.write_bytes(blob)
    return
  tmp = _temp_name(target)
  try:
    with open(tmp, 'wb') as f:
      f.write(blob)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, target)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def read_bytes(source: PathLike) -> bytes:
  return path(source).read_bytes()


def copy_tree(local_dir: PathLike, dest: PathLike) -> None:
  """Copies every file under local folder `local_dir` into `dest`."""
  dest = path(dest)
  for dirpath, _, names in os.walk(local_dir):
    rel = os.path.relpath(dirpath, local_dir)
    for n in names:
      with open(os.path.join(dirpath, n), 'rb') as f:
        write_atomic(dest / rel / n if rel != '.' else dest / n, f.read())


@contextlib.contextmanager
def local_folder(dest: PathLike) -> Iterator[str]:
  """A local folder standing for `dest`, for writers that need a real path.

  `dest` itself when it is local; else an empty temporary folder whose files
  are copied into `dest` when the block ends without an exception.
  """
  if is_local(dest):
    os.makedirs(dest, exist_ok=True)
    yield os.fspath(dest)
    return
  tmp = tempfile.mkdtemp(prefix='robustmq_jax-')
  try:
    yield tmp
    copy_tree(tmp, dest)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
