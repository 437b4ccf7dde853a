"""Parallel decoding of file-backed sources through Grain, with a subset cache.

Folder and TFDS sources hold encoded JPEGs. Decoding + Res256Crop224 costs
~4-10 ms an image in PIL, more than a small model's forward, so it runs in
parallel: a thread pool by default (PIL releases the GIL), or Grain worker
processes (`mp_prefetch`, one element per host batch). Batches come out in
order, so no result depends on the worker count.

`DecodedCache` keeps the decoded images of the subsets a run evaluates
(the adversarial suite's 1,000 images, the corruption suite's 5,000, ...)
up to a stated memory bound, so the second cell or precision reads them from
memory instead of decoding again. It belongs to one dataset object, which a
run opens once per image size.
"""

import collections
from concurrent import futures
import dataclasses
import os
from typing import Callable, Iterator, Sequence

from absl import flags
import numpy as np

from robustmq_jax.data import preprocess

# Decoded images kept per dataset object (uint8; 1 GiB = 7,100 images at 224).
CACHE_LIMIT_BYTES = 1 << 30


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
  """How a file-backed source decodes its images.

  Attributes:
    workers: Grain worker processes (0: threads in this process).
    threads: decoding threads when `workers` is 0 (PIL releases the GIL
      while decoding and resizing).
    cache_limit_bytes: bound of the decoded-subset cache (0: no cache).
  """
  workers: int = 0
  threads: int = max(os.cpu_count() or 1, 1)
  cache_limit_bytes: int = CACHE_LIMIT_BYTES


class DecodedCache:
  """{example id: uint8 image} up to `limit_bytes`; then it stops growing."""

  def __init__(self, limit_bytes: int = CACHE_LIMIT_BYTES):
    self.limit_bytes = limit_bytes
    self._images: dict[int, np.ndarray] = {}
    self.nbytes = 0

  def has(self, ids: Sequence[int]) -> bool:
    return all(int(i) in self._images for i in ids)

  def get(self, ids: Sequence[int]) -> np.ndarray | None:
    """The stacked images of `ids` if all are cached, else None."""
    try:
      return np.stack([self._images[int(i)] for i in ids])
    except KeyError:
      return None

  def put(self, ids: Sequence[int], images: np.ndarray) -> None:
    for i, im in zip(ids, images):
      i = int(i)
      if i in self._images:
        continue
      if self.nbytes + im.nbytes > self.limit_bytes:
        return
      self._images[i] = im
      self.nbytes += im.nbytes

  def clear(self) -> None:
    self._images.clear()
    self.nbytes = 0


class _BatchDecoder:
  """Picklable map fn: a chunk of ids -> their stacked uint8 images."""

  def __init__(self, decode_one: Callable[[int], np.ndarray]):
    self.decode_one = decode_one

  def __call__(self, chunk: np.ndarray) -> np.ndarray:
    return np.stack([self.decode_one(int(i)) for i in chunk])


def _ensure_absl_flags_parsed() -> None:
  # Grain's multiprocessing reads absl flags; outside absl.app.run (tests,
  # notebooks) they are unparsed (REFERENCE §15).
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _threaded_chunks(decode_one: Callable[[int], np.ndarray],
                     chunks: Sequence[np.ndarray], threads: int,
                     ahead: int = 2) -> Iterator[np.ndarray]:
  """Images decoded by a thread pool, one future per image, `ahead` chunks
  in flight (PIL releases the GIL while decoding and resizing)."""
  with futures.ThreadPoolExecutor(max(threads, 1)) as pool:
    pending = collections.deque()
    todo = iter(chunks)

    def submit():
      chunk = next(todo, None)
      if chunk is not None:
        pending.append([pool.submit(decode_one, int(i)) for i in chunk])

    for _ in range(ahead):
      submit()
    while pending:
      done = pending.popleft()
      submit()
      yield np.stack([f.result() for f in done])


def decode_chunks(decode_one: Callable[[int], np.ndarray],
                  chunks: Sequence[np.ndarray],
                  options: DecodeOptions) -> Iterator[np.ndarray]:
  """Yields the decoded images of each chunk of ids, in order.

  `options.workers > 0` runs Grain worker processes (`mp_prefetch`), for
  hosts with many cores; the default, a thread pool, measured 2.0x one
  process on 2 cores where Grain's own threads and its 2 worker processes
  were slower than one process (`benchmarks/input.py`, RESULTS.md).
  """
  nonempty = [np.asarray(c) for c in chunks]
  if options.workers <= 0:
    yield from _threaded_chunks(decode_one, nonempty, options.threads)
    return
  import grain.python as grain  # pylint: disable=g-import-not-at-top
  _ensure_absl_flags_parsed()
  it = grain.MapDataset.source(nonempty).map(
      _BatchDecoder(decode_one)).to_iter_dataset(
          grain.ReadOptions(num_threads=1, prefetch_buffer_size=2))
  yield from it.mp_prefetch(grain.MultiprocessingOptions(
      num_workers=options.workers, per_worker_buffer_size=2))


class FileBackedImages:
  """`images(ids)` and `iter_images(chunks)` of a file-backed dataset.

  Mixed into FolderDataset and TfdsDataset, which define `jpeg_bytes(idx)`,
  `labels(ids)`, `image_size` and `num_examples`, and set `decode_options`.
  """

  decode_options: DecodeOptions = DecodeOptions()
  _cache: DecodedCache | None = None

  def decode_one(self, idx: int) -> np.ndarray:
    """The preprocessed (Res256Crop224) uint8 image of one example."""
    return preprocess.resize_crop(preprocess.decode_rgb(self.jpeg_bytes(idx)),
                                  self.image_size)

  @property
  def cache(self) -> DecodedCache:
    if self._cache is None:
      self._cache = DecodedCache(self.decode_options.cache_limit_bytes)
    return self._cache

  def images(self, ids: Sequence[int]) -> np.ndarray:
    """uint8 NHWC images of `ids` (cached, else decoded in parallel)."""
    return next(self.iter_images([np.asarray(ids)]))

  def arrays(self, limit: int | None = None):
    """(images, labels) of the first `limit` examples (decoded in parallel)."""
    ids = np.arange(min(limit or self.num_examples, self.num_examples))
    return (np.concatenate(list(self.iter_images(np.array_split(
        ids, max(1, len(ids) // 64))))), self.labels(ids))

  def iter_images(self, chunks: Sequence[np.ndarray]) -> Iterator[np.ndarray]:
    """The images of each chunk, decoded in parallel unless all cached."""
    if all(self.cache.has(c) for c in chunks):
      for c in chunks:  # One chunk at a time: no copy of the whole subset.
        yield self.cache.get(c)
      return
    for chunk, images in zip(chunks, decode_chunks(
        self.decode_one, chunks, self.decode_options)):
      self.cache.put(chunk, images)
      yield images

  def __getstate__(self):
    # Worker processes get the source, not the main process's cache.
    state = dict(self.__dict__)
    state['_cache'] = None
    return state
