"""The systematic suite: ImageNet-S decoder x resize grid on the test split.

For every available decoder, the raw files of the split are decoded on the
host. On an accelerator the 11 resizes (PIL and OpenCV, emulated exactly on
device, `robustmq_jax.systematic`) and the centre crop then run in one
compiled program that does not depend on the model (compiled once per batch
shape and reused by every model and precision), and the model's evaluation
step takes its output, global arrays that never leave the devices. On a CPU
the libraries themselves resize on the host (`systematic.host_resize`):
there they are the reference and faster than the emulation; the two agree
within one level (tests/test_systematic_suite.py). One cell per (decoder,
resize): ``noise`` is the resize method, ``params`` hold the decoder and the
geometry.

Config (`config.systematic`, all optional; see `default_config`):
  decoders: names, or 'all' (every name in `systematic.DECODERS`); those whose
    library is missing are skipped, logged and listed in every row's
    'skipped_decoders' and in the report, never evaluated with a substitute.
  resizes: resize methods, or 'all' (the 11).
  protocol: 'imagenet' (square resize to `resize_to`, centre crop to the model
    size; ImageNet-S at 224) or 'native' (resize straight to the model size).
  resize_to: side of the square resize; 0 = model size * 256/224 with an
    even margin (256 for 224, 36 for 32).
  num_examples: evaluate a fixed seeded subset of this many test examples;
    0 = the whole split (`config.data.num_examples`).
  resize_backend: 'auto' (host libraries on a CPU backend, device emulation
    otherwise), 'host' or 'device'.

Rows: 'accuracy', 'n', 'decode_failures' (files the decoder rejected; they
count as errors), 'decoder_library', 'skipped_decoders', 'resize_backend'.
"""

from typing import Any, Iterator, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from robustmq_jax import config_fields
from robustmq_jax import systematic
from robustmq_jax.errors import invalid
from robustmq_jax.evaluation import mesh as mesh_lib
from robustmq_jax.results import outcomes
from robustmq_jax.suites import base
from robustmq_jax.systematic import batch as batch_lib
from robustmq_jax.systematic import host_resize
from robustmq_jax.systematic import protocol as protocol_lib
from robustmq_jax.systematic import resample

_FIELDS = ('decoders', 'resizes', 'protocol', 'resize_to', 'num_examples',
           'resize_backend')
_BACKENDS = ('auto', 'host', 'device')
_PREFIX = 'rs/'
# Subsets up to this many images keep their decoded images across models.
_DECODE_CACHE_IMAGES = 2048
# Host-resized stacks of a subset are kept across models and precisions when
# they fit in this many bytes (the sample's: 200 x 11 x 32 x 32 x 3, 7 MB).
_RESIZED_CACHE_BYTES = 256 << 20


def default_config(image_size: int = 224) -> ml_collections.ConfigDict:
  """`config.systematic` defaults (the sample: 200 images, 3 decoders)."""
  return ml_collections.ConfigDict({
      # The sample (quickstart) keeps three decoders that differ the most:
      # libjpeg-turbo's accurate path (PIL), FFmpeg's own decoder, and the
      # fast integer DCT without fancy upsampling; 'all' in sample_full.
      'decoders': (('pil', 'ffmpeg', 'simplejpeg_fast') if image_size <= 32
                   else tuple(systematic.DECODERS)),
      'resizes': tuple(systematic.METHODS),
      'protocol': 'imagenet',
      'resize_to': 0,
      'num_examples': 200 if image_size <= 32 else 0,
      'resize_backend': 'auto',
  })


def _cfg(config) -> ml_collections.ConfigDict:
  return config.get('systematic') or ml_collections.ConfigDict()


def _names(cfg, field: str, allowed: Sequence[str]) -> list[str]:
  value = cfg.get(field)
  if value is None or value == 'all':
    return list(allowed)
  if isinstance(value, str):
    value = (value,)
  if not isinstance(value, (list, tuple)):
    raise invalid(f'config.systematic.{field}', value, 'a tuple of names')
  names = config_fields.parse_list(value, f'config.systematic.{field}', str)
  for n in names:
    if n not in allowed:
      raise invalid(f'config.systematic.{field}', n, allowed)
  if not names:
    raise invalid(f'config.systematic.{field}', value, 'at least one name')
  return list(dict.fromkeys(names))


class _ResizedBatch:
  """Global arrays: 'image' [B, methods, H, W, 3] uint8, label, id, mask, ok."""

  def __init__(self, arrays):
    self._arrays = arrays

  def as_dict(self):
    return dict(self._arrays)


def _agree(vec: np.ndarray) -> np.ndarray:
  """Element-wise max over processes (identity on one process)."""
  if jax.process_count() == 1:
    return vec
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(vec)).max(axis=0)


@base.register
class SystematicSuite(base.Suite):
  """Decoder x resize grid (ImageNet-S) with device-side resizes."""

  name = 'systematic'

  def __init__(self):
    self._fns = {}
    # Decoded images of small subsets, kept for the next model / precision
    # of the same dataset: (decoder, example id) -> image or None.
    self._decoded = {}
    self._decoded_from = None  # the dataset they came from (held, so its
    # identity cannot be reused by another object)
    # Host-resized crops, model-independent: (decoder, method, protocol
    # params, example id) -> [H, W, 3] uint8. Bounded by _RESIZED_CACHE_BYTES.
    self._resized = {}
    self._logged = set()

  def release(self, *, model_done: bool = False) -> None:
    # The resize programs depend on the mesh and methods only: kept.
    del model_done
    for key in [k for k in self._fns if k[0] != 'resize']:
      del self._fns[key]

  # ------------------------------------------------------------- config
  def validate(self, config) -> None:
    cfg = _cfg(config)
    for k in cfg.keys():
      if k not in _FIELDS:
        raise invalid('config.systematic', k, _FIELDS)
    _names(cfg, 'decoders', systematic.DECODERS)
    _names(cfg, 'resizes', systematic.METHODS)
    if cfg.get('resize_backend', 'auto') not in _BACKENDS:
      raise invalid('config.systematic.resize_backend',
                    cfg.get('resize_backend'), _BACKENDS)
    if cfg.get('protocol', 'imagenet') not in protocol_lib.PROTOCOLS:
      raise invalid('config.systematic.protocol', cfg.get('protocol'),
                    protocol_lib.PROTOCOLS)
    for field in ('resize_to', 'num_examples'):
      v = cfg.get(field)
      if v is not None and (isinstance(v, bool) or not isinstance(v, int)
                            or v < 0):
        raise invalid(f'config.systematic.{field}', v,
                      'an int >= 0 (0 = default)')

  def _protocol(self, ctx, model) -> protocol_lib.Protocol:
    cfg = _cfg(ctx.config)
    return protocol_lib.make(cfg.get('protocol', 'imagenet'),
                             model.image_size, cfg.get('resize_to') or None)

  def _backend(self, ctx) -> str:
    choice = _cfg(ctx.config).get('resize_backend') or 'auto'
    if choice == 'auto':
      return 'host' if jax.default_backend() == 'cpu' else 'device'
    return choice

  def _decoders(self, ctx) -> tuple[list[str], dict[str, str]]:
    wanted = _names(_cfg(ctx.config), 'decoders', systematic.DECODERS)
    info = {d.name: d for d in systematic.list_decoders()}
    use = [d for d in wanted if info[d].available]
    skipped = {d: info[d].reason for d in wanted if not info[d].available}
    for d, why in skipped.items():
      if d not in self._logged:
        self._logged.add(d)
        logging.warning('systematic: decoder %s skipped: %s', d, why)
    return use, skipped

  def cells(self, ctx, model) -> Sequence[base.Cell]:
    proto = self._protocol(ctx, model)
    cfg = _cfg(ctx.config)
    n = cfg.get('num_examples')
    n = n if n and n < ctx.num_examples else None
    resizes = _names(cfg, 'resizes', systematic.METHODS)
    decoders, _ = self._decoders(ctx)
    return [base.Cell(m, {'decoder': d, **proto.params()}, n=n)
            for d in decoders for m in resizes]

  # ---------------------------------------------------------------- run
  def _fn(self, apply, methods: tuple[str, ...]):
    """Per-example fn of one model over the resized stack (cached)."""
    key = (apply, methods)
    if key not in self._fns:

      def fn(variables, b, key_):
        del key_
        # [B, M, H, W, 3] in [0, 1] (the evaluator scaled the uint8 images).
        logits = jax.lax.map(lambda im: apply(variables, im),
                             jnp.moveaxis(b['image'], 1, 0))
        ok = b['ok'].astype(jnp.float32)
        hit = (jnp.argmax(logits, -1) == b['label'][None]).astype(jnp.float32)
        values = {f'correct/{m}': hit[i] * ok for i, m in enumerate(methods)}
        values['decode_failed'] = 1.0 - ok
        return values

      self._fns[key] = fn
    return self._fns[key]

  def _resize_fn(self, mesh, methods: tuple[str, ...]):
    """Jitted global batch -> resized stack, independent of the model."""
    key = ('resize', mesh, methods)
    if key not in self._fns:

      def resize(b):
        x = b['image']
        stack = jnp.stack([
            resample.apply_planned(
                x, batch_lib.method_plan(b, m, _PREFIX), m)
            for m in methods], axis=1)
        return {'image': stack, 'label': b['label'], 'id': b['id'],
                'mask': b['mask'], 'ok': b[_PREFIX + 'ok']}

      self._fns[key] = jax.jit(
          resize, out_shardings=mesh_lib.data_sharding(mesh))
    return self._fns[key]

  def _batches(self, ctx, ids, decoder, methods, proto) -> Iterator[Any]:
    resize = self._resize_fn(ctx.mesh, methods)
    stash = {}
    blank = np.zeros(proto.size + (3,), np.uint8)

    # Decoding is host work every precision would repeat (FFmpeg starts a
    # process per batch): keep what a small subset decoded for the next one.
    keep = len(ids) <= _DECODE_CACHE_IMAGES
    if self._decoded_from is not ctx.dataset:
      self._decoded, self._decoded_from = {}, ctx.dataset
      self._resized = {}

    def decode(chunk):
      todo = [i for i in chunk if (decoder, i) not in self._decoded]
      got = {}
      if todo:
        got = dict(zip(todo, systematic.decode_many(
            [ctx.dataset.jpeg_bytes(i) for i in todo], decoder=decoder)))
      if keep:
        self._decoded.update(((decoder, i), im) for i, im in got.items())
      return [got[i] if i in got else self._decoded[(decoder, i)]
              for i in chunk]

    if self._backend(ctx) == 'host':
      yield from self._host_batches(ctx, ids, decoder, methods, proto, decode)
      return

    def load(chunk):
      chunk = [int(i) for i in chunk]
      images = decode(chunk)
      stash['ok'] = [im is not None for im in images]
      images = [blank if im is None else im for im in images]
      stash['sizes'] = [im.shape[:2] for im in images]
      side = int(_agree(np.asarray(
          [batch_lib.padded_side(stash['sizes'] or [proto.size])]))[0])
      return batch_lib.pad_square(images, side) if images else np.zeros(
          (0, side, side, 3), np.uint8)

    for hb in ctx.batches(ids=ids, load=load):
      real = int(hb.mask.sum())
      sizes = list(stash['sizes'][:real])
      ok = list(stash['ok'][:real])
      fill = stash['sizes'][0]  # padding rows: any size within the side
      sizes += [fill] * (len(hb.mask) - real)
      ok += [False] * (len(hb.mask) - real)
      extra = batch_lib.plan_batch(sizes, proto.size, methods,
                                   crop=proto.crop_box, prefix=_PREFIX,
                                   agree=_agree)
      extra[_PREFIX + 'ok'] = np.asarray(ok)
      arrays = hb.as_dict()
      arrays.update(extra)
      yield _ResizedBatch(resize(mesh_lib.to_global(ctx.mesh, arrays)))

  def _host_batches(self, ctx, ids, decoder, methods, proto,
                    decode) -> Iterator[Any]:
    """Batches resized and cropped by the libraries on the host."""
    out = proto.crop or proto.resize_to
    geometry = tuple(sorted(proto.params().items()))
    keep = (len(ids) * len(methods) * out * out * 3 <= _RESIZED_CACHE_BYTES)
    stash = {}

    def load(chunk):
      chunk = [int(i) for i in chunk]
      todo = [i for i in chunk if any(
          (decoder, m, geometry, i) not in self._resized for m in methods)]
      images = dict(zip(todo, decode(todo)))
      bad = {i for i, im in images.items() if im is None}
      ok = [im for im in images.values() if im is not None]
      fresh = {}
      if ok:
        fresh = dict(zip([i for i in todo if i not in bad],
                         host_resize.resize_stack(ok, proto.size, methods,
                                                  crop=proto.crop_box)))
      stack = np.zeros((len(chunk), len(methods), out, out, 3), np.uint8)
      for row, i in enumerate(chunk):
        if i in bad:
          continue
        for j, m in enumerate(methods):
          key = (decoder, m, geometry, i)
          if i in fresh:
            stack[row, j] = fresh[i][j]
            if keep:
              self._resized[key] = fresh[i][j]
          else:
            stack[row, j] = self._resized[key]
      stash['ok'] = [i not in bad for i in chunk]
      return stack

    for hb in ctx.batches(ids=ids, load=load):
      arrays = hb.as_dict()
      ok = np.zeros(len(hb.mask), bool)
      ok[:len(stash['ok'])] = stash['ok']
      arrays['ok'] = ok
      yield _ResizedBatch(mesh_lib.to_global(ctx.mesh, arrays))

  def run(self, ctx, model, cells) -> Iterator[tuple[base.Cell, dict]]:
    proto = self._protocol(ctx, model)
    _, skipped = self._decoders(ctx)
    libs = {d.name: d.library for d in systematic.list_decoders()}
    by_decoder = {}
    for c in cells:
      by_decoder.setdefault(c.params['decoder'], []).append(c)
    for decoder, group in by_decoder.items():
      methods = tuple(c.noise for c in group)
      ids = ctx.subset(group[0].n)
      s = ctx.evaluator.sums(
          self._fn(model.apply, methods),
          self._batches(ctx, ids, decoder, methods, proto),
          variables=model.variables, total=len(ids),
          desc=f'systematic {model.name} {model.precision} {decoder}',
          keep=tuple(f'correct/{m}' for m in methods))
      for c in group:
        yield c, {
            'accuracy': s[f'correct/{c.noise}'] / s['n'],
            outcomes.FIELD: outcomes.from_sums(s, f'correct/{c.noise}'),
            'n': int(s['n']),
            'decode_failures': int(round(s['decode_failed'])),
            'decoder_library': libs[decoder],
            'skipped_decoders': dict(skipped),
            'resize_backend': self._backend(ctx),
        }
