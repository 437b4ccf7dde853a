"""An ImageNet-shaped fake dataset: full-size JPEGs, for tests and benchmarks.

ImageNet's images are JPEGs of varied size (most about 500x375 or 375x500,
some much larger or smaller) in class folders. `write_folder` writes the
same shape of data — N synset-like class folders of JPEGs with sizes and
aspect ratios drawn like ImageNet's, and textured content so the files
decode at realistic cost — and `write_array_record` stores the same files as
a TFDS ArrayRecord dataset (`fake_imagenet`) readable with
`tfds.data_source`, built without TensorFlow: the image is kept as an encoded
bytes feature, as `robustmq_jax.data.tfds_source` reads ImageNet's.

Everything is deterministic in `seed`.
"""

import io
import os
from typing import Iterator

import numpy as np
from PIL import Image

DATASET_NAME = 'fake_imagenet'
# Seed offset of each split (the folder script uses the same).
_OFFSETS = {'validation': 0, 'train': 1}
# (width, height) choices weighted like ImageNet's most common shapes.
_SHAPES = ((500, 375), (375, 500), (500, 333), (333, 500), (500, 500),
           (640, 480), (400, 300), (800, 600), (1024, 768), (250, 188))
_WEIGHTS = np.array([30, 12, 15, 6, 8, 6, 6, 6, 4, 7], np.float64)


def synset(c: int) -> str:
  """A synset-like folder name that sorts in class order."""
  return f'n{c:08d}'


def _image(rng: np.random.Generator, label: int) -> Image.Image:
  w, h = _SHAPES[rng.choice(len(_SHAPES), p=_WEIGHTS / _WEIGHTS.sum())]
  # Smooth colour field + class-dependent stripes + fine noise: compresses
  # like a photograph (tens of kB), not like a flat colour.
  small = rng.integers(0, 256, (h // 32 + 2, w // 32 + 2, 3), np.uint8)
  base = np.asarray(Image.fromarray(small).resize((w, h),
                                                  Image.Resampling.BICUBIC),
                    np.float32)
  yy, xx = np.mgrid[0:h, 0:w]
  stripes = 40 * np.sin((xx * (label % 7 + 1) + yy * (label % 5)) / 9.0)
  noise = rng.normal(0, 12, (h, w, 1))
  img = np.clip(base + stripes[..., None] + noise, 0, 255).astype(np.uint8)
  return Image.fromarray(img)


def examples(num_classes: int, per_class: int, *, seed: int = 0
             ) -> Iterator[tuple[int, str, bytes]]:
  """(label, file name, JPEG bytes), class by class."""
  for c in range(num_classes):
    rng = np.random.default_rng([seed, c])
    for i in range(per_class):
      buf = io.BytesIO()
      _image(rng, c).save(buf, format='JPEG', quality=int(rng.integers(75, 96)))
      yield c, f'{synset(c)}_{i:05d}.JPEG', buf.getvalue()


def write_folder(root: str, num_classes: int, per_class: int, *,
                 seed: int = 0) -> int:
  """Writes root/<synset>/<file>.JPEG; returns the number of files."""
  n = 0
  for label, name, data in examples(num_classes, per_class, seed=seed):
    folder = os.path.join(root, synset(label))
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), 'wb') as f:
      f.write(data)
    n += 1
  return n


def write_array_record(data_dir: str, num_classes: int, splits: dict[str, int],
                       *, seed: int = 0) -> str:
  """Builds the `fake_imagenet` TFDS dataset in `data_dir` (ArrayRecord).

  Args:
    data_dir: TFDS data_dir.
    num_classes: classes.
    splits: {split name: images per class}, e.g. {'train': 60,
      'validation': 10}; 'train' and 'validation' hold the same images as
      `write_folder(..., seed=seed * 1000 + 1)` and `(..., seed * 1000)`.
    seed: base seed.

  Returns:
    The prepared dataset folder.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  class FakeImagenet(tfds.core.GeneratorBasedBuilder):
    """Fake ImageNet: encoded JPEG bytes, label, file name."""
    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self,
          features=tfds.features.FeaturesDict({
              # Encoded bytes, not tfds.features.Image: building an Image
              # feature needs TensorFlow.
              'image': tfds.features.Tensor(shape=(), dtype=np.object_),
              'label': tfds.features.ClassLabel(num_classes=num_classes),
              'file_name': tfds.features.Text(),
          }))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {name: self._generate_examples(per_class, _OFFSETS.get(name, 2))
              for name, per_class in splits.items()}

    def _generate_examples(self, per_class, offset):
      for k, (label, name, data) in enumerate(
          examples(num_classes, per_class, seed=seed * 1000 + offset)):
        yield k, {'image': data, 'label': label, 'file_name': name}

  FakeImagenet.name = DATASET_NAME
  builder = FakeImagenet(data_dir=data_dir, file_format='array_record')
  builder.download_and_prepare()
  return str(builder.data_dir)
