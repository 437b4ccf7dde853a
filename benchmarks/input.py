r"""Input pipeline throughput: Grain decode + Res256Crop224 vs one process.

  JAX_PLATFORMS=cpu python benchmarks/input.py [--root=DIR] [--images=384]

On a fake ImageNet of full-size JPEGs (`scripts/make_fake_imagenet.py`;
written to a temporary folder unless --root is given), measures images/s of
  * the reference: one process decoding with PIL + Res256Crop224, image by
    image (what the folder source did before);
  * ours: `iter_batches` over a folder source with its default decoding
    (one thread per core), and with Grain worker processes (one per core);
and, for context, a ResNet-18 forward at batch 32 on the default device (the
pipeline must not be its bottleneck). Rounds alternate reference and ours;
the median round counts. Last line: `ratio X` (the default over the
reference).
"""

import os
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

from robustmq_jax.data import fake_imagenet
from robustmq_jax.data import iter_batches
from robustmq_jax.data import pipeline
from robustmq_jax.data.folder import FolderDataset

_ROOT = flags.DEFINE_string('root', '', 'Class-per-folder JPEG tree (default: '
                            'a fresh fake ImageNet in a temporary folder).')
_IMAGES = flags.DEFINE_integer('images', 384, 'Images per round.')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Rounds (median counts).')
_BATCH = flags.DEFINE_integer('batch', 32, 'Batch size.')
_FORWARD = flags.DEFINE_bool('forward', True, 'Also time a ResNet-18 '
                             'forward at --batch for context.')


def _reference(ds: FolderDataset, ids: np.ndarray) -> float:
  start = time.perf_counter()
  for i in ids:
    ds.decode_one(int(i))
  return len(ids) / (time.perf_counter() - start)


def _ours(ds: FolderDataset, ids: np.ndarray, options) -> float:
  ds.decode_options = options
  ds.cache.clear()  # Measure decoding, not the cache.
  start = time.perf_counter()
  n = sum(int(b.mask.sum()) for b in iter_batches(ds, _BATCH.value, ids=ids))
  return n / (time.perf_counter() - start)


def _forward_rate(batch: int) -> float:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from robustmq_jax import models  # pylint: disable=g-import-not-at-top
  model = models.get_model('resnet18', num_classes=1000)
  x = jnp.zeros((batch, 224, 224, 3), jnp.float32)
  variables = model.init(jax.random.key(0), x[:1], train=False)
  f = jax.jit(lambda v, x: model.apply(v, x, train=False))
  f(variables, x).block_until_ready()
  times = []
  for _ in range(3):
    start = time.perf_counter()
    f(variables, x).block_until_ready()
    times.append(time.perf_counter() - start)
  return batch / statistics.median(times)


def main(argv):
  del argv
  for name, v in (('images', _IMAGES.value), ('rounds', _ROUNDS.value),
                  ('batch', _BATCH.value)):
    if v < 1:
      raise app.UsageError(f'--{name}={v} is not valid; allowed: >= 1.')
  with tempfile.TemporaryDirectory() as tmp:
    root = _ROOT.value
    if not root:
      root = os.path.join(tmp, 'val')
      per_class = -(-_IMAGES.value // 10)
      fake_imagenet.write_folder(root, 10, per_class)
    ds = FolderDataset(root, 224)
    ids = np.arange(min(_IMAGES.value, ds.num_examples))
    cores = os.cpu_count() or 1
    variants = {
        f'ours (default): {cores} decoding threads': pipeline.DecodeOptions(
            workers=0, threads=cores, cache_limit_bytes=0),
        f'grain, {cores} worker processes': pipeline.DecodeOptions(
            workers=cores, cache_limit_bytes=0),
    }
    rates = {'reference: one process, PIL': []} | {k: [] for k in variants}
    for _ in range(_ROUNDS.value):
      rates['reference: one process, PIL'].append(_reference(ds, ids))
      for name, options in variants.items():
        rates[name].append(_ours(ds, ids, options))
    median = {k: statistics.median(v) for k, v in rates.items()}
    print(f'{len(ids)} full-size JPEGs from {root}, batch {_BATCH.value}, '
          f'{cores} cores, median of {_ROUNDS.value} rounds:')
    print('| pipeline | images/s |')
    print('|---|---|')
    for k, v in median.items():
      print(f'| {k} | {v:.0f} |')
    if _FORWARD.value:
      print(f'| (ResNet-18 forward, batch {_BATCH.value}) | '
            f'{_forward_rate(_BATCH.value):.0f} |')
    ref = median['reference: one process, PIL']
    ours = median[next(iter(variants))]
    print(f'ratio {ours / ref:.2f}')


if __name__ == '__main__':
  sys.exit(app.run(main))
