"""A prepared ImageNet-C folder as a data source (for parity with published
numbers): `<root>/<corruption>/<severity>/<wnid>/<file>`, the layout of the
released tarballs (`make_imagenet_c.py`). Labels are the positions of the
wnids in sorted order (the standard ImageNet class index)."""

import functools
import os
from typing import Sequence

import numpy as np

from robustmq_jax.errors import UserError

_EXTENSIONS = ('.jpeg', '.jpg', '.png')


@functools.lru_cache(maxsize=None)
def _wnids(root: str) -> tuple[str, ...]:
  """All class folders found under any corruption/severity of `root`."""
  found = set()
  for corruption in os.listdir(root):
    cdir = os.path.join(root, corruption)
    if not os.path.isdir(cdir):
      continue
    for sev in os.listdir(cdir):
      sdir = os.path.join(cdir, sev)
      if os.path.isdir(sdir):
        found.update(d for d in os.listdir(sdir)
                     if os.path.isdir(os.path.join(sdir, d)))
  return tuple(sorted(found))


class ImageNetCFolder:
  """One (corruption, severity) of a prepared ImageNet-C folder (a Dataset).

  Attributes follow `robustmq_jax.data.base.Dataset`. Files are sorted by
  (wnid, name); example i is the same file for every corruption and severity
  when the folder is complete.
  """

  def __init__(self, root: str, corruption: str, severity: int,
               image_size: int = 224):
    self.root = root
    folder = os.path.join(root, corruption, str(severity))
    if not os.path.isdir(folder):
      raise UserError(
          f'config.corruption.imagenet_c_dir={root!r} has no folder '
          f'{corruption}/{severity}; expected <dir>/<corruption>/<severity>/'
          '<wnid>/<file> as in the released ImageNet-C.')
    wnids = _wnids(root)
    index = {w: i for i, w in enumerate(wnids)}
    files, labels = [], []
    for wnid in sorted(os.listdir(folder)):
      d = os.path.join(folder, wnid)
      if not os.path.isdir(d):
        continue
      for f in sorted(os.listdir(d)):
        if f.lower().endswith(_EXTENSIONS):
          files.append(os.path.join(d, f))
          labels.append(index[wnid])
    if not files:
      raise UserError(f'config.corruption.imagenet_c_dir: no images in '
                      f'{folder!r}.')
    self.name = f'imagenet-c:{corruption}/{severity}'
    self.num_classes = len(wnids)
    self.image_size = image_size
    self.num_examples = len(files)
    self._files = files
    self._labels = np.asarray(labels, np.int32)

  def jpeg_bytes(self, idx: int) -> bytes:
    with open(self._files[idx], 'rb') as f:
      return f.read()

  def images(self, ids: Sequence[int]) -> np.ndarray:
    from PIL import Image  # pylint: disable=g-import-not-at-top
    out = []
    for i in ids:
      with Image.open(self._files[int(i)]) as im:
        arr = np.asarray(im.convert('RGB'), np.uint8)
      if arr.shape[:2] != (self.image_size, self.image_size):
        raise UserError(
            f'{self._files[int(i)]} is {arr.shape[1]}x{arr.shape[0]}; '
            f'ImageNet-C images must be {self.image_size}x{self.image_size} '
            '(they are used as released, never re-cropped).')
      out.append(arr)
    return np.stack(out)

  def labels(self, ids: Sequence[int]) -> np.ndarray:
    return self._labels[np.asarray(ids, np.int64)]
