"""Class-per-folder image trees (the common ImageNet-val layout)."""

import os
from typing import Sequence

import numpy as np

from robustmq_jax.data import pipeline
from robustmq_jax.errors import UserError

_EXTENSIONS = ('.jpeg', '.jpg', '.png')


class FolderDataset(pipeline.FileBackedImages):
  """`root/<class>/<file>`; classes are the sorted folder names.

  For ImageNet, the 1000 synset folders (n01440764, ...) sort into the
  standard label order.
  """

  def __init__(self, root: str, image_size: int = 224,
               num_classes: int | None = None,
               decode_options: pipeline.DecodeOptions | None = None):
    self.name = f'folder:{root}'
    self.decode_options = decode_options or pipeline.DecodeOptions()
    if not os.path.isdir(root):
      raise UserError(
          f'config.data.source={self.name!r}: folder not found; expected '
          '<root>/<class>/<image>.JPEG, e.g. ImageNet val sorted into synset '
          'folders.')
    classes = sorted(d for d in os.listdir(root)
                     if os.path.isdir(os.path.join(root, d)))
    self._files, labels = [], []
    for c, cls in enumerate(classes):
      for f in sorted(os.listdir(os.path.join(root, cls))):
        if f.lower().endswith(_EXTENSIONS):
          self._files.append(os.path.join(root, cls, f))
          labels.append(c)
    if not self._files:
      raise UserError(f'config.data.source={self.name!r}: no images found '
                      f'(looked for {", ".join(_EXTENSIONS)} files in class '
                      'sub-folders).')
    self._labels = np.asarray(labels, np.int32)
    self.classes = classes
    self.num_classes = num_classes or len(classes)
    self.num_examples = len(self._files)
    self.image_size = image_size

  def jpeg_bytes(self, idx: int) -> bytes:
    with open(self._files[idx], 'rb') as f:
      return f.read()

  def labels(self, ids: Sequence[int]) -> np.ndarray:
    return self._labels[np.asarray(ids)]
