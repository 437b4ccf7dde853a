"""The embedded sample: scikit-learn digits as 32x32 RGB JPEGs.

Built by scripts/make_sample.py from `sklearn.datasets.load_digits` (the UCI
optical digits, BSD-3-Clause as distributed with scikit-learn). 1797 images,
10 classes, fixed stratified split: 1438 train, 359 test.
"""

import functools
import os
from typing import Sequence

import numpy as np

from robustmq_jax.data import preprocess

_PATH = os.path.join(os.path.dirname(__file__), 'sample_digits.npz')
SPLITS = ('train', 'test')


@functools.cache
def _arrays():
  with np.load(_PATH) as z:
    return {k: z[k] for k in z.files}


class SampleDataset:
  """One split of the embedded sample; images decoded once with PIL."""

  num_classes = 10
  image_size = 32

  def __init__(self, split: str = 'test'):
    a = _arrays()
    self.name = 'sample' if split == 'test' else f'sample:{split}'
    self.split = split
    self._rows = np.flatnonzero(a['split'] == SPLITS.index(split))
    self._labels = a['label'][self._rows]
    self.num_examples = len(self._rows)
    self._decoded = None

  def jpeg_bytes(self, idx: int) -> bytes:
    a = _arrays()
    r = self._rows[idx]
    return a['data'][a['offsets'][r]:a['offsets'][r + 1]].tobytes()

  def _all_images(self) -> np.ndarray:
    if self._decoded is None:
      self._decoded = np.stack([
          np.asarray(preprocess.decode_rgb(self.jpeg_bytes(i)), np.uint8)
          for i in range(self.num_examples)])
    return self._decoded

  def images(self, ids: Sequence[int]) -> np.ndarray:
    return self._all_images()[np.asarray(ids)]

  def labels(self, ids: Sequence[int]) -> np.ndarray:
    return self._labels[np.asarray(ids)]

  def arrays(self) -> tuple[np.ndarray, np.ndarray]:
    """All images and labels of the split (for training / calibration)."""
    return self._all_images(), self._labels.astype(np.int32)
