"""What every data source provides to the suites."""

import dataclasses
from typing import Iterator, Protocol, Sequence

import jax
import numpy as np


@dataclasses.dataclass
class HostBatch:
  """A batch on one host, padded to a fixed size.

  Attributes:
    image: uint8 NHWC images (already preprocessed to the model size).
    label: int32 labels.
    id: int64 global example ids (stable across batch sizes and hosts; used to
      derive per-example random keys).
    mask: bool, False on padding rows.
  """
  image: np.ndarray
  label: np.ndarray
  id: np.ndarray
  mask: np.ndarray

  def as_dict(self) -> dict[str, np.ndarray]:
    return dataclasses.asdict(self)


class Dataset(Protocol):
  """An evaluation split. Indices 0..num_examples-1 are global example ids."""

  name: str            # the config's data source string, e.g. 'sample'.
  num_classes: int
  image_size: int      # side of the square model input.
  num_examples: int

  def images(self, ids: Sequence[int]) -> np.ndarray:
    """uint8 NHWC preprocessed images for the given ids."""

  def labels(self, ids: Sequence[int]) -> np.ndarray:
    """int32 labels for the given ids."""

  def jpeg_bytes(self, idx: int) -> bytes:
    """The raw encoded file of example `idx`, before any decode (may be PNG
    or JPEG as stored by the source)."""


def iter_batches(
    dataset: Dataset,
    batch_size: int,
    *,
    ids: Sequence[int] | None = None,
    process_index: int = 0,
    process_count: int = 1,
    load=None,
) -> Iterator[HostBatch]:
  """Yields this process's padded share of `ids` in batches of `batch_size`.

  Every process yields the same number of equal batches (the last ones
  padded), so the global batch is always `process_count` times the local
  one. The local batch is `batch_size` or less: the fewest batches of
  `batch_size`, evened out (rounded up to a multiple of the local devices),
  so that padding stays under one row per batch and device instead of up to
  a whole batch (200 examples at 64: 4 x 56 = 224 rows on 8 devices, 4 x 50
  on one, instead of 4 x 64 = 256).

  Args:
    dataset: the source.
    batch_size: most rows per batch on this host (see above).
    ids: which examples (default: all, in order).
    process_index: this process.
    process_count: number of processes.
    load: optional ``f(ids) -> images`` replacing `dataset.images` (e.g. a
      different decoder); its output must have a fixed shape per batch.
      Without it, a dataset with `iter_images` (folder and TFDS sources)
      decodes its batches in parallel (`robustmq_jax.data.pipeline`).
  """
  ids = np.arange(dataset.num_examples) if ids is None else np.asarray(ids)
  shards = np.array_split(ids, process_count)
  mine = shards[process_index]
  longest = max(len(s) for s in shards)
  num_batches = -(-longest // batch_size)
  if num_batches:
    per_device = jax.local_device_count()
    even = -(-longest // num_batches)
    batch_size = min(batch_size, -(-even // per_device) * per_device)
  chunks = [mine[b * batch_size:(b + 1) * batch_size]
            for b in range(num_batches)]
  parallel = getattr(dataset, 'iter_images', None)
  use_parallel = load is None and parallel is not None
  load = load or dataset.images
  next_images = load
  if use_parallel:
    # File-backed sources decode in Grain workers, batches in order.
    decoded = parallel([c for c in chunks if len(c)])
    next_images = lambda chunk: next(decoded)
  for chunk in chunks:
    pad = batch_size - len(chunk)
    if len(chunk):
      images = next_images(chunk)
      labels = dataset.labels(chunk).astype(np.int32)
    else:  # A host with nothing left still joins the collective step.
      images = load(ids[:1])[:0]
      labels = np.zeros((0,), np.int32)
    mask = np.concatenate([np.ones(len(chunk), bool), np.zeros(pad, bool)])
    images = np.concatenate(
        [images, np.zeros((pad,) + images.shape[1:], images.dtype)])
    labels = np.concatenate([labels, np.zeros(pad, np.int32)])
    id_ = np.concatenate([chunk, np.zeros(pad, chunk.dtype)]).astype(np.int64)
    yield HostBatch(image=images, label=labels, id=id_, mask=mask)


class LazyImages:
  """A split's images as an array-like that decodes only what is indexed.

  `len()` and `[index array]` / `[slice]` / `[int]` are what calibration and
  training use (`calibration_batches` draws its 256 images with a
  permutation of `len()`; `training.fit` indexes each step's batch), so PTQ
  on ImageNet decodes its calibration images, not 1.28 M.
  """

  def __init__(self, dataset: Dataset):
    self.dataset = dataset

  def __len__(self) -> int:
    return self.dataset.num_examples

  def _ids(self, index) -> tuple[np.ndarray, bool]:
    if isinstance(index, slice):
      return np.arange(len(self))[index], False
    ids = np.asarray(index)
    if ids.dtype == bool:
      ids = np.flatnonzero(ids)
    return ids.reshape(-1), ids.ndim == 0

  def __getitem__(self, index) -> np.ndarray:
    ids, scalar = self._ids(index)
    if not ids.size:
      return np.zeros((0, self.dataset.image_size, self.dataset.image_size, 3),
                      np.uint8)
    images = self.dataset.images(ids)
    return images[0] if scalar else images


class LazyLabels(LazyImages):
  """The labels of a split, read on indexing (like `LazyImages`)."""

  def __getitem__(self, index) -> np.ndarray:
    ids, scalar = self._ids(index)
    labels = np.asarray(self.dataset.labels(ids), np.int32)
    return labels[0] if scalar else labels


def lazy_arrays(dataset: Dataset) -> tuple[LazyImages, LazyLabels]:
  """(images, labels) of a split that read only the examples indexed."""
  return LazyImages(dataset), LazyLabels(dataset)
