"""TFDS datasets read through `tfds.data_source` (ArrayRecord; no TensorFlow).

Images are kept encoded (`SkipDecoding`) so the raw JPEG bytes stay reachable
for the systematic-noise suite; they are decoded with PIL on demand and
preprocessed with Res256Crop224 (or kept as is when already the model size).
"""

from typing import Sequence

import numpy as np

from robustmq_jax.data import pipeline
from robustmq_jax.data import preprocess
from robustmq_jax.errors import UserError

# Model input side per dataset (others: 224).
_NATIVE = {'cifar10': 32, 'cifar100': 32, 'mnist': 28}
_DEFAULT_SPLIT = {'imagenet2012': 'validation'}


def _prepare_hint(name: str, data_dir: str | None) -> str:
  where = data_dir or '~/tensorflow_datasets'
  if name.startswith('imagenet2012'):
    return (f'prepare it once with `pip install robustmq_jax[imagenet]` and '
            f'`tfds build {name} --data_dir={where} --manual_dir=DIR '
            '--file_format=array_record`, where DIR holds '
            'ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar')
  return (f'prepare it on a machine with internet with `tfds build {name} '
          f'--data_dir={where} --file_format=array_record` and copy the folder')


class TfdsDataset(pipeline.FileBackedImages):
  """A split of a prepared TFDS dataset.

  Args:
    name: TFDS name, e.g. 'imagenet2012'.
    split: split (default: 'validation' for ImageNet, else 'test').
    data_dir: TFDS data_dir (None: TFDS's default).
    image_size: model input side (default: native for 32x32 data, else 224).
    raw_bytes: keep images encoded (needed by the systematic suite); False
      lets TFDS decode them (e.g. under `tfds.testing.mock_data`, which cannot
      produce encoded images without TensorFlow).
  """

  def __init__(self, name: str, split: str | None, data_dir: str | None,
               image_size: int | None = None, raw_bytes: bool = True,
               decode_options: pipeline.DecodeOptions | None = None):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    split = split or _DEFAULT_SPLIT.get(name, 'test')
    self.name = f'tfds:{name}:{split}'
    try:
      builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # pylint: disable=broad-except
      raise UserError(f'config.data.source={self.name!r}: TFDS does not know '
                      f'the dataset {name!r}.') from e
    decoders = {'image': tfds.decode.SkipDecoding()} if raw_bytes else None
    try:
      self._source = tfds.data_source(name, split=split, data_dir=data_dir,
                                      download=False, decoders=decoders)
    except Exception as e:  # pylint: disable=broad-except
      raise UserError(
          f'config.data.source={self.name!r}: no prepared ArrayRecord data '
          f'for split {split!r} in {builder.data_dir}; '
          f'{_prepare_hint(name, data_dir)}.') from e
    self.num_examples = len(self._source)
    self.num_classes = builder.info.features['label'].num_classes
    self.image_size = image_size or _NATIVE.get(name, 224)
    self.decode_options = decode_options or pipeline.DecodeOptions()
    self._labels: dict[int, int] = {}

  def _record(self, idx: int):
    return self._source[int(idx)]

  def jpeg_bytes(self, idx: int) -> bytes:
    image = self._record(idx)['image']
    if isinstance(image, np.ndarray):  # Decoded by TFDS: re-encode losslessly.
      return preprocess.encode_png(image)
    return bytes(image)

  def labels(self, ids: Sequence[int]) -> np.ndarray:
    # Labels are a few bytes each: kept per dataset object once read.
    for i in ids:
      if int(i) not in self._labels:
        self._labels[int(i)] = int(self._record(i)['label'])
    return np.asarray([self._labels[int(i)] for i in ids], np.int32)
