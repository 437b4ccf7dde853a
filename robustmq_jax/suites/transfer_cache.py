"""Transfer adversarials crafted once on the float model, kept for a run.

A transfer attack on a quantized model is the white-box attack of its float
model, scored on the quantized one. With per-example keys derived from the
example ids it is the same set of images for every precision, so the
adversarial suite crafts it once per (float model, attack, budget, subset)
and only scores it afterwards: each quantized program then compiles and runs
one attack instead of two. The float model's own white-box cell computes the
same images, so it hands them over (`put`) and nothing is crafted twice.
"""

from typing import Any, Callable, Hashable

from absl import logging
import jax
import numpy as np

# Kept images, all cells of a run together (float32 on the host).
LIMIT_BYTES = 1 << 30


class TransferCache:
  """Host copies of float-model adversarials, keyed by cell and subset."""

  def __init__(self, limit_bytes: int = LIMIT_BYTES):
    self.limit_bytes = limit_bytes
    self._kept: dict[Hashable, tuple[Any, np.ndarray, dict[int, int]]] = {}
    self._bytes = 0
    self._warned = False

  def clear(self) -> None:
    """Forgets every kept image (their float model is finished)."""
    self._kept.clear()
    self._bytes = 0

  @staticmethod
  def _key(ctx, float_model, cell_key: Hashable) -> tuple[Any, ...]:
    return (ctx.dataset.name, ctx.dataset.image_size, ctx.seed,
            id(float_model), cell_key)

  def has(self, ctx, float_model, cell_key: Hashable) -> bool:
    return self._key(ctx, float_model, cell_key) in self._kept

  def has_room(self, ctx, n: int) -> bool:
    """Whether n more images of `ctx`'s size fit under `limit_bytes`."""
    side = ctx.dataset.image_size
    estimate = n * side * side * 3 * 4 // jax.process_count()
    if self._bytes + estimate <= self.limit_bytes:
      return True
    if not self._warned:
      logging.info('transfer adversarials would exceed %d MiB: crafted '
                   "inside each quantized model's program instead",
                   self.limit_bytes >> 20)
      self._warned = True
    return False

  def put(self, ctx, float_model, cell_key: Hashable, images: np.ndarray,
          ids: np.ndarray) -> None:
    """Keeps adversarials computed elsewhere (the float model's own cell)
    for this process's example `ids`, one image per id."""
    self._bytes += images.nbytes
    rows = {int(i): r for r, i in enumerate(ids)}
    self._kept[self._key(ctx, float_model, cell_key)] = (
        float_model, images, rows)

  def images(self, ctx, float_model, cell_key: Hashable, craft: Callable,
             variables: Any, key, batches: Callable[[], Any], n: int):
    """The adversarials of this process's rows and their row of each id.

    Args:
      ctx: the suite context (dataset, seed, evaluator).
      float_model: the transfer source (kept alive with its images, so its
        identity stays a valid key).
      cell_key: everything else that determines the images (attack program,
        static and traced settings, example ids).
      craft: per-example fn -> {'adv': images} for `Evaluator.map`.
      variables: its variables (float model weights and attack settings).
      key: the attack's PRNG key (per-example keys come from the ids).
      batches: () -> host batches of the subset.
      n: the subset's size (all processes), to check the memory limit
        before crafting.

    Returns:
      (float32 images [n, H, W, 3], {example id: row}), or None when keeping
      them would pass `limit_bytes` (the caller then attacks in-program).
    """
    full_key = self._key(ctx, float_model, cell_key)
    if full_key not in self._kept:
      if not self.has_room(ctx, n):
        return None
      out, ids = ctx.evaluator.map(craft, batches(), variables=variables,
                                   key=key)
      self.put(ctx, float_model, cell_key, out['adv'], ids)
    _, images, rows = self._kept[full_key]
    return images, rows
