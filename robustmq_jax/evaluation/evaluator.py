"""The one sharded evaluation path: per-example values summed under a mask."""

import time
from typing import Any, Callable, Iterable, Mapping

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from robustmq_jax.data.base import HostBatch
from robustmq_jax.evaluation import mesh as mesh_lib
from robustmq_jax.xla_cpu import conv_layout

# fn(variables, batch, key) -> {metric: per-example array [B]}. `batch` holds
# global arrays: image (float32 in [0, 1], NHWC), label, id, mask.
PerExampleFn = Callable[[Any, Mapping[str, jax.Array], jax.Array],
                        Mapping[str, jax.Array]]


def images_to_float(images: jax.Array) -> jax.Array:
  """uint8 [0, 255] -> float32 [0, 1] (on device)."""
  return images.astype(jnp.float32) / 255.0


def _float_images(batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """The batch with uint8 images as float32 in [0, 1]."""
  batch = dict(batch)
  if batch['image'].dtype == jnp.uint8:
    batch['image'] = images_to_float(batch['image'])
  return batch


class Evaluator:
  """Runs per-example functions over batches and returns exact sums.

  Host batches become global arrays in `mesh_lib.to_global`; the jitted step
  multiplies every per-example value by the padding mask and sums on device,
  so results do not depend on the device count or the padding. Sums are
  accumulated in float64 on the host.
  """

  def __init__(self, mesh: jax.sharding.Mesh, *, log_every_s: float = 10.0,
               on_progress: Callable[[int, int | None], None] | None = None):
    self.mesh = mesh
    self.log_every_s = log_every_s
    # Called after every batch of `sums` with (images done, total or None):
    # the runner's progress display shows how far a long cell is.
    self.on_progress = on_progress
    # Set by the runner for a model with grouped / depthwise convolutions on
    # the CPU backend: steps are compiled through
    # `xla_cpu.conv_layout.canonical_convs` (3-6x faster forwards there).
    # Steps are never differentiated, so re-binding their custom-derivative
    # calls from the jaxpr (see `canonical_convs`) is safe.
    self.rewrite_convs = False
    self._compiled: dict[Any, Callable] = {}

  def set_model(self, info: Any) -> None:
    """Turns the grouped-convolution rewrite on for `info`'s model where it
    pays (a `models.ModelInfo` with grouped convolutions, CPU backend)."""
    self.rewrite_convs = bool(info.grouped_convs and conv_layout.wanted())

  def _jit(self, step: Callable, **kwargs) -> Callable:
    if self.rewrite_convs:
      step = conv_layout.canonical_convs(step)
    return jax.jit(step, **kwargs)

  def release(self) -> None:
    """Forgets every compiled step (the runner calls it between models and
    between precisions that do not share their programs, with
    `jax.clear_caches()`, so programs do not accumulate)."""
    self._compiled.clear()

  def _step(self, fn: PerExampleFn, keep: tuple[str, ...] = (),
            collect: tuple[str, ...] = ()) -> Callable:
    cache_key = (fn, keep, collect, self.rewrite_convs)
    if cache_key not in self._compiled:

      def step(variables, batch, key):
        values = dict(fn(variables, _float_images(batch), key))
        collected = {k: values.pop(k) for k in collect}
        mask = batch['mask'].astype(jnp.float32)
        sums = {k: jnp.sum(v.astype(jnp.float32) * mask)
                for k, v in values.items()}
        sums['n'] = jnp.sum(mask)
        out = {'sums': sums}
        if keep:
          # Per-example outcomes, replicated: a few bytes per example, and
          # every process then sees the whole global batch's results.
          kept = {k: values[k].astype(jnp.bool_) for k in keep
                  if k in values}
          kept['id'] = batch['id']
          kept['mask'] = batch['mask'].astype(jnp.bool_)
          out['kept'] = kept
        if collect:
          out['collected'] = collected
        return out

      replicated = mesh_lib.replicated(self.mesh)
      shardings = {'sums': replicated, 'kept': replicated,
                   'collected': jax.sharding.NamedSharding(
                       self.mesh, jax.sharding.PartitionSpec(
                           mesh_lib.DATA_AXIS))}
      self._compiled[cache_key] = self._jit(step, out_shardings={
          k: shardings[k] for k in
          ('sums',) + (('kept',) if keep else ()) +
          (('collected',) if collect else ())})
    return self._compiled[cache_key]

  def _map_step(self, fn: PerExampleFn, axis: int) -> Callable:
    key = ('map', fn, axis, self.rewrite_convs)
    if key not in self._compiled:

      def step(variables, batch, key):
        return fn(variables, _float_images(batch), key)

      spec = jax.sharding.PartitionSpec(
          *([None] * axis + [mesh_lib.DATA_AXIS]))
      self._compiled[key] = self._jit(
          step, out_shardings=jax.sharding.NamedSharding(self.mesh, spec))
    return self._compiled[key]

  def map(
      self,
      fn: PerExampleFn,
      batches: Iterable[HostBatch],
      *,
      variables: Any,
      key: jax.Array | None = None,
      axis: int = 0,
  ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """`fn`'s per-example outputs for this process's real examples.

    For outputs that are kept, not summed (generated images, adversarial
    examples reused by later models).

    Args:
      fn: per-example function (hashable and stable, as for `sums`); every
        output has the batch on axis `axis`.
      batches: host batches from `robustmq_jax.data.iter_batches`.
      variables: passed to `fn`.
      key: PRNG key passed unchanged to every batch.
      axis: the batch axis of the outputs.

    Returns:
      ({name: host array, this process's real rows concatenated on `axis`},
      the ids of those rows, in order).
    """
    step = self._map_step(fn, axis)
    key = jax.random.key(0) if key is None else key
    parts: dict[str, list[np.ndarray]] = {}
    ids = []
    for batch in batches:
      global_batch = mesh_lib.to_global(self.mesh, batch.as_dict())
      out = step(variables, global_batch, key)
      real = np.asarray(batch.mask, bool)
      for k, v in out.items():
        parts.setdefault(k, []).append(
            np.compress(real, _local_rows(v, axis), axis=axis))
      ids.append(np.asarray(batch.id)[real])
    return ({k: np.concatenate(v, axis=axis) for k, v in parts.items()},
            np.concatenate(ids) if ids else np.zeros((0,), np.int64))

  def sums(
      self,
      fn: PerExampleFn,
      batches: Iterable[HostBatch],
      *,
      variables: Any,
      key: jax.Array | None = None,
      total: int | None = None,
      desc: str = '',
      keep: tuple[str, ...] = (),
      collect: tuple[str, ...] = (),
  ) -> 'Sums':
    """Sums `fn`'s per-example values over all (unpadded) examples.

    Args:
      fn: per-example function; must be hashable and stable (it is the cache
        key of the compiled step), so build it once per model, not per call.
      batches: host batches from `robustmq_jax.data.iter_batches`.
      variables: model variables (replicated on the mesh by the caller or
        here).
      key: PRNG key passed unchanged to every batch (derive per-example keys
        from `batch['id']`, never from the batch position).
      total: expected number of examples on all hosts, for progress/ETA.
      desc: label for the progress log.
      keep: per-example boolean outputs of `fn` to keep (e.g. 'correct'),
        for paired comparisons in the report; part of the compile key.
      collect: per-example outputs of `fn` returned, not summed (as by
      `map`, batch on axis 0): e.g. adversarial examples that later models
      reuse, without a second program to craft them.

    Returns:
      Python floats: each metric's sum and 'n', the number of real examples;
      `.outcomes` maps each kept name to (example ids, booleans) over all
      processes' real examples; `.collected` is ({name: this process's real
      rows}, their ids) when `collect` is given.
    """
    keep, collect = tuple(keep), tuple(collect)
    step = self._step(fn, keep, collect)
    key = jax.random.key(0) if key is None else key
    acc = Sums()
    kept: dict[str, list[np.ndarray]] = {}
    parts: dict[str, list[np.ndarray]] = {}
    ids = []
    start = last = time.perf_counter()
    for batch in batches:
      global_batch = mesh_lib.to_global(self.mesh, batch.as_dict())
      out = step(variables, global_batch, key)
      if collect:
        real = np.asarray(batch.mask, bool)
        for k, v in out.pop('collected').items():
          parts.setdefault(k, []).append(_local_rows(v, 0)[real])
        ids.append(np.asarray(batch.id)[real])
      out = jax.device_get(out)
      if keep:
        per_example = out['kept']
        real = np.asarray(per_example.pop('mask'), bool)
        for k, v in per_example.items():
          kept.setdefault(k, []).append(np.asarray(v)[real])
      out = out['sums']
      for k, v in out.items():
        acc[k] = acc.get(k, 0.0) + float(np.asarray(v, np.float64))
      if self.on_progress is not None:
        self.on_progress(int(acc['n']), total)
      now = time.perf_counter()
      if now - last > self.log_every_s and jax.process_index() == 0:
        last = now
        rate = acc['n'] / (now - start)
        eta = ((total - acc['n']) / rate) if total and rate else float('nan')
        logging.info('%s: %d/%s images, %.1f img/s, ETA %.0fs', desc,
                     acc['n'], total or '?', rate, eta)
    if kept:
      kept_ids = np.concatenate(kept.pop('id'))
      acc.outcomes = {k: (kept_ids, np.concatenate(v))
                      for k, v in kept.items()}
    if collect:
      acc.collected = (
          {k: np.concatenate(v) for k, v in parts.items()},
          np.concatenate(ids) if ids else np.zeros((0,), np.int64))
    return acc


class Sums(dict):
  """`Evaluator.sums`' result: {metric: sum}, plus kept per-example outcomes.

  Attributes:
    outcomes: {name: (ids, booleans)} for the names passed as `keep`.
    collected: ({name: this process's real rows}, their ids) for the names
      passed as `collect`, else None.
  """

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.outcomes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    self.collected: tuple[dict[str, np.ndarray], np.ndarray] | None = None


def _local_rows(x: jax.Array, axis: int) -> np.ndarray:
  """This process's rows of a global array sharded on `axis` (replicas of a
  shard, on other mesh axes, counted once), in order."""
  shards = sorted(x.addressable_shards,
                  key=lambda sh: sh.index[axis].start or 0)
  seen, local = set(), []
  for sh in shards:
    start = sh.index[axis].start or 0
    if start not in seen:
      seen.add(start)
      local.append(np.asarray(sh.data))
  return np.concatenate(local, axis=axis)
