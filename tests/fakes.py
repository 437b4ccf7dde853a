"""In-memory stand-ins for tests: a tiny dataset and a linear classifier."""

import numpy as np


class ArrayDataset:
  """A Dataset over in-memory uint8 images (see robustmq_jax.data.base)."""

  def __init__(self, images: np.ndarray, labels: np.ndarray, *,
               num_classes: int = 10, name: str = 'fake'):
    self.name = name
    self._images = images
    self._labels = labels.astype(np.int32)
    self.num_examples = len(images)
    self.num_classes = num_classes
    self.image_size = images.shape[1]

  def images(self, ids):
    return self._images[np.asarray(ids)]

  def labels(self, ids):
    return self._labels[np.asarray(ids)]

  def jpeg_bytes(self, idx):
    import io  # pylint: disable=g-import-not-at-top
    from PIL import Image  # pylint: disable=g-import-not-at-top
    buf = io.BytesIO()
    Image.fromarray(self._images[idx]).save(buf, format='JPEG', quality=90)
    return buf.getvalue()

  def arrays(self):
    return self._images, self._labels


def random_dataset(n: int = 37, size: int = 8, seed: int = 0,
                   num_classes: int = 10) -> ArrayDataset:
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
  labels = rng.integers(0, num_classes, n)
  return ArrayDataset(images, labels, num_classes=num_classes)


def linear_params(size: int = 8, num_classes: int = 10, seed: int = 1):
  rng = np.random.default_rng(seed)
  return {'w': rng.normal(size=(size * size * 3, num_classes)).astype(
      np.float32) * 0.1}


def linear_apply(params, images):
  return images.reshape(images.shape[0], -1) @ params['w']
