"""The training input of the QAT job: batches by step, streamed, resumable.

Step `s` of a run with global batch `B` draws the examples at positions
``p = s * B + r`` (r = 0..B-1) of an endless stream in which each epoch is a
permutation of the split seeded by (seed, epoch). The batch of a step is
therefore a function of (seed, step) alone: a resumed run reads exactly the
batches the interrupted one would have read, with no iterator state to save.
Process k of P reads rows [k B/P, (k+1) B/P) of every global batch (its
share; the global array concatenates the shares in process order), so the
global batch does not depend on the process count either.

The embedded sample is indexed in memory. Folder and TFDS sources decode in
Grain (`grain.MapDataset.range(steps).map(...)`): an element is one step's
share, decoded and augmented by Grain's reader threads (or worker processes,
`DecodeOptions.workers`) and prefetched in order; nothing decodes more than
the steps being read. Augmentations:

  'random_resized_crop'  torchvision's ImageNet training transform:
                         RandomResizedCrop(size, scale (0.08, 1), ratio
                         (3/4, 4/3)), PIL bilinear, then a horizontal flip
                         with probability 1/2; random numbers from (seed,
                         position), so an example's crop does not depend on
                         the worker or process that decodes it.
  'none'                 the evaluation transform (Res256Crop224, or the
                         image as is when already the model size).

The sample's random 2-pixel crops (`Recipe.pad_crop`) run on device, in
the training step.
"""

import math
from typing import Iterator

import numpy as np
from PIL import Image

from robustmq_jax.data import pipeline
from robustmq_jax.data import preprocess

AUGMENTATIONS = ('random_resized_crop', 'none')
_ORDER_TAG, _CROP_TAG = 0, 1


class TrainOrder:
  """Position in the endless training stream -> example id."""

  def __init__(self, num_examples: int, seed: int):
    self.num_examples = num_examples
    self.seed = seed
    self._cache: dict[int, np.ndarray] = {}

  def permutation(self, epoch: int) -> np.ndarray:
    """The order of epoch `epoch` (the last two are kept)."""
    if epoch not in self._cache:
      if len(self._cache) >= 2:
        self._cache.pop(min(self._cache))
      rng = np.random.default_rng([self.seed, _ORDER_TAG, epoch])
      self._cache[epoch] = rng.permutation(self.num_examples)
    return self._cache[epoch]

  def ids(self, positions: np.ndarray) -> np.ndarray:
    positions = np.asarray(positions, np.int64)
    epochs, rows = np.divmod(positions, self.num_examples)
    out = np.empty_like(positions)
    for e in np.unique(epochs):
      sel = epochs == e
      out[sel] = self.permutation(int(e))[rows[sel]]
    return out

  def __getstate__(self):  # Worker processes build their own cache.
    return dict(self.__dict__, _cache={})


def crop_box(width: int, height: int, rng: np.random.Generator,
             scale: tuple[float, float] = (0.08, 1.0),
             ratio: tuple[float, float] = (3 / 4, 4 / 3)
             ) -> tuple[int, int, int, int]:
  """torchvision RandomResizedCrop.get_params: (top, left, height, width)."""
  area = width * height
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return top, left, h, w
  in_ratio = width / height  # Fallback: the central crop.
  if in_ratio < ratio[0]:
    w, h = width, int(round(width / ratio[0]))
  elif in_ratio > ratio[1]:
    w, h = int(round(height * ratio[1])), height
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(img: Image.Image, size: int,
                        rng: np.random.Generator) -> np.ndarray:
  """RandomResizedCrop to `size` (PIL bilinear) and a random flip; uint8."""
  top, left, h, w = crop_box(img.width, img.height, rng)
  out = img.resize((size, size), Image.Resampling.BILINEAR,
                   box=(left, top, left + w, top + h))
  if rng.random() < 0.5:
    out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  return np.asarray(out, np.uint8)


class _StepShare:
  """Picklable Grain map fn: step -> this process's (images, labels)."""

  def __init__(self, dataset, order: TrainOrder, global_batch: int,
               rows: tuple[int, int], augment: str, seed: int):
    self.dataset, self.order = dataset, order
    self.global_batch, self.rows = global_batch, rows
    self.augment, self.seed = augment, seed

  def positions(self, step: int) -> np.ndarray:
    return step * self.global_batch + np.arange(*self.rows, dtype=np.int64)

  def image(self, idx: int, position: int) -> np.ndarray:
    if self.augment == 'none':
      return self.dataset.decode_one(idx)
    rng = np.random.default_rng([self.seed, _CROP_TAG, position])
    img = preprocess.decode_rgb(self.dataset.jpeg_bytes(idx))
    return random_resized_crop(img, self.dataset.image_size, rng)

  def __call__(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    positions = self.positions(int(step))
    ids = self.order.ids(positions)
    images = np.stack([self.image(int(i), int(p))
                       for i, p in zip(ids, positions)])
    return images, np.asarray(self.dataset.labels(ids), np.int32)


class TrainStream:
  """This process's share of every training step's batch.

  Args:
    dataset: a training split (`robustmq_jax.data.get_dataset`): the
      in-memory sample, or a folder / TFDS source (decoded in Grain).
    global_batch: rows of a step over all processes.
    seed: the run seed (order and crops).
    augment: one of AUGMENTATIONS (file-backed sources; the in-memory
      sample is read as stored).
    process_index, process_count: this process and how many there are
      (`jax.process_index()`, `jax.process_count()`).
    decode_options: Grain reader threads or worker processes.
  """

  def __init__(self, dataset, *, global_batch: int, seed: int,
               augment: str = 'none', process_index: int = 0,
               process_count: int = 1,
               decode_options: pipeline.DecodeOptions | None = None):
    if global_batch % process_count:
      raise ValueError(f'global batch {global_batch} is not a multiple of '
                       f'the process count {process_count}')
    if augment not in AUGMENTATIONS:
      raise ValueError(f'augment={augment!r}; allowed: {AUGMENTATIONS}')
    local = global_batch // process_count
    self.dataset = dataset
    self.file_backed = hasattr(dataset, 'decode_one')
    self.decode_options = decode_options or getattr(
        dataset, 'decode_options', pipeline.DecodeOptions())
    self.share = _StepShare(
        dataset, TrainOrder(dataset.num_examples, seed), global_batch,
        (process_index * local, (process_index + 1) * local), augment, seed)

  def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 NHWC images, int32 labels) of this process at `step`."""
    if self.file_backed:
      return self.share(step)
    ids = self.share.order.ids(self.share.positions(step))
    return (self.dataset.images(ids),
            np.asarray(self.dataset.labels(ids), np.int32))

  def batches(self, start: int, stop: int
              ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The batches of steps start..stop-1, in order (prefetched)."""
    if not self.file_backed:
      for step in range(start, stop):
        yield self.batch(step)
      return
    import grain.python as grain  # pylint: disable=g-import-not-at-top
    opts = self.decode_options
    ds = grain.MapDataset.range(start, stop).map(self.share)
    if opts.workers <= 0:
      threads = max(opts.threads, 1)
      yield from ds.to_iter_dataset(grain.ReadOptions(
          num_threads=threads, prefetch_buffer_size=2 * threads))
      return
    pipeline._ensure_absl_flags_parsed()  # pylint: disable=protected-access
    yield from ds.to_iter_dataset(grain.ReadOptions(
        num_threads=1, prefetch_buffer_size=2)).mp_prefetch(
            grain.MultiprocessingOptions(num_workers=opts.workers,
                                         per_worker_buffer_size=2))
