"""The corruption suite: ImageNet-C corruptions x severities, on the fly.

Every (corruption, severity) is generated on device from the test images,
one seeded key per example (`fold_in(fold_in(fold_in(seed, corruption),
severity), example id)`), so the numbers do not depend on batch size, device
count or resumption. The severity is a traced value looped over with
`lax.map`: one compiled program per corruption serves all severities, in one
pass over the data. Two modes give identical numbers:

* 'fused': the corruption runs inside the evaluation step, in the same
  compiled program as the model (one compile per model and corruption);
  nothing is materialised. For large data.
* 'cached': each corruption is compiled once per run and its uint8 images
  (all severities of the evaluated subset) are kept in host memory, then
  every model and precision only runs its forward on them (one compile per
  model). On a CPU most of the time is compiling, so this is what the 32x32
  sample uses: 19 corruption compiles for all five precisions instead of 95.

Optionally the corrupted images are re-saved as JPEG quality 85 (as the
released ImageNet-C), on device, or read from a prepared ImageNet-C folder
instead.

Cells: ``noise`` = corruption name, ``params`` = {'severity', 'table'} (+
'jpeg_q85' / 'source' when set); plus one clean cell (noise 'none',
severity 0) for relative mCE. Metrics: 'accuracy', 'n'.

Config (`config.corruption`, all optional; see `default_config`):
  names: corruption names; 'all' (19) and 'benchmark' (the 15) expand.
  severities: subset of 1..5.
  table: 'auto' (from the image side), '224', '64' or '32'.
  jpeg_q85: re-save corrupted images as JPEG quality 85 (released ImageNet-C).
  truncate: cast corrupted images to uint8 by truncation, as the dataset
    writers did (default True; 'cached' mode always stores uint8).
  mode: 'fused' or 'cached' (above); default 'cached' up to 64x64 images.
  num_examples: a fixed seeded subset of the test split; 0 = all.
  imagenet_c_dir: a prepared ImageNet-C folder
    (`<dir>/<corruption>/<severity>/<wnid>/<file>`); read instead of
    generating (224x224 models, ImageNet class order).
  clean: also evaluate the clean images (needed for relative mCE).
"""

from typing import Any, Iterator, Sequence

import jax
from jax import lax
import jax.numpy as jnp
import ml_collections
import numpy as np

from robustmq_jax import config_fields
from robustmq_jax import corruptions
from robustmq_jax.corruptions import jpeg as jpeg_lib
from robustmq_jax.errors import invalid
from robustmq_jax.errors import UserError
from robustmq_jax.results import outcomes
from robustmq_jax.suites import base

_FIELDS = ('names', 'severities', 'table', 'jpeg_q85', 'truncate',
           'num_examples', 'imagenet_c_dir', 'clean', 'mode')
_MODES = ('fused', 'cached')
# 'cached' mode keeps at most this many bytes of corrupted images in memory.
_CACHE_LIMIT_BYTES = 2 << 30
_OUT = outcomes.FIELD
_TABLES = ('auto',) + corruptions.params.TABLE_NAMES


def default_config(image_size: int = 224) -> ml_collections.ConfigDict:
  """`config.corruption` defaults.

  On the 32x32 sample, 'cached' mode and a 64-image subset keep the 19 x 5
  cells at about 40 s for the first model (compiling the 19 corruption
  programs, once for all precisions) and 10 s for each further precision on
  a 2-core CPU.
  """
  return ml_collections.ConfigDict({
      'names': tuple(corruptions.ALL),  # or ('benchmark',): the 15
      'severities': (1, 2, 3, 4, 5),
      'table': 'auto',
      'jpeg_q85': False,
      'truncate': True,
      'num_examples': 64 if image_size <= 32 else 0,
      'imagenet_c_dir': '',
      'clean': True,
      'mode': 'cached' if image_size <= 64 else 'fused',
  })


def _cfg(config) -> ml_collections.ConfigDict:
  return config.get('corruption') or ml_collections.ConfigDict()


def _names(cfg) -> list[str]:
  value = cfg.get('names') or 'all'
  if isinstance(value, str):
    value = (value,)
  if not isinstance(value, (list, tuple)):
    raise invalid('config.corruption.names', value,
                  "'all', 'benchmark' or a tuple of corruption names")
  names = []
  for n in config_fields.parse_list(value, 'config.corruption.names', str):
    if n in ('all', 'benchmark'):
      names += corruptions.list_corruptions(n)
    else:
      names.append(n)
  for n in names:
    if n not in corruptions.ALL:
      raise invalid('config.corruption.names', n, corruptions.ALL)
  if not names:
    raise invalid('config.corruption.names', value, 'at least one name')
  return list(dict.fromkeys(names))


def _severities(cfg) -> list[int]:
  value = cfg.get('severities', (1, 2, 3, 4, 5))
  try:
    sevs = config_fields.parse_list(value, 'config.corruption.severities',
                                    int)
  except UserError:
    sevs = None
  if not sevs or any(s not in (1, 2, 3, 4, 5) for s in sevs):
    raise invalid('config.corruption.severities', value,
                  'a tuple of integers from 1 to 5')
  return sorted(set(sevs))


def _correct(logits, labels):
  return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)


@base.register
class CorruptionSuite(base.Suite):
  """The 19 ImageNet-C corruptions x 5 severities, generated on device."""

  name = 'corruption'

  def __init__(self):
    self._fns = {}
    self._cache = {}
    self._cache_bytes = 0

  # ------------------------------------------------------------- config
  def validate(self, config) -> None:
    cfg = _cfg(config)
    for k in cfg.keys():
      if k not in _FIELDS:
        raise invalid('config.corruption', k, _FIELDS)
    _names(cfg)
    _severities(cfg)
    table = str(cfg.get('table', 'auto'))
    if table not in _TABLES:
      raise invalid('config.corruption.table', cfg.get('table'), _TABLES)
    for field in ('jpeg_q85', 'truncate', 'clean'):
      v = cfg.get(field)
      if v is not None and not isinstance(v, bool):
        raise invalid(f'config.corruption.{field}', v, 'True or False')
    n = cfg.get('num_examples')
    if n is not None and (isinstance(n, bool) or not isinstance(n, int)
                          or n < 0):
      raise invalid('config.corruption.num_examples', n,
                    'an int >= 0 (0 = the whole split)')
    mode = cfg.get('mode', 'fused')
    if mode not in _MODES:
      raise invalid('config.corruption.mode', mode, _MODES)
    if mode == 'cached' and cfg.get('truncate') is False:
      raise invalid('config.corruption.truncate', False,
                    "True in mode 'cached' (it stores uint8 images); use mode "
                    "'fused' for unquantised corrupted images")
    d = cfg.get('imagenet_c_dir') or ''
    if not isinstance(d, str):
      raise invalid('config.corruption.imagenet_c_dir', d,
                    "a folder path or ''")
    if d:
      import os  # pylint: disable=g-import-not-at-top
      if not os.path.isdir(d):
        raise invalid('config.corruption.imagenet_c_dir', d,
                      'an existing folder <dir>/<corruption>/<severity>/'
                      '<wnid>/<file>')

  def _table(self, cfg, model) -> str:
    table = str(cfg.get('table', 'auto'))
    if cfg.get('imagenet_c_dir'):
      return '224'
    if table == 'auto':
      return corruptions.table_for_size(model.image_size)
    return table

  def _params(self, cfg, model, severity: int) -> dict[str, Any]:
    p = {'severity': severity, 'table': self._table(cfg, model)}
    if cfg.get('jpeg_q85'):
      p['jpeg_q85'] = True
    if cfg.get('imagenet_c_dir'):
      p['source'] = 'imagenet-c'
    return p

  def cells(self, ctx, model) -> Sequence[base.Cell]:
    cfg = _cfg(ctx.config)
    n = cfg.get('num_examples')
    n = n if n and n < ctx.num_examples else None
    out = []
    if cfg.get('clean', True):
      out.append(base.Cell('none', self._params(cfg, model, 0), n=n))
    for name in _names(cfg):
      for s in _severities(cfg):
        out.append(base.Cell(name, self._params(cfg, model, s), n=n))
    return out

  # ---------------------------------------------------------------- run
  def _clean_fn(self, apply):
    key = (apply, 'none')
    if key not in self._fns:
      self._fns[key] = lambda v, b, k: {
          'correct/0': _correct(apply(v, b['image']), b['label'])}
    return self._fns[key]

  def _fn(self, apply, name: str, severities: tuple[int, ...], table: str,
          q85: bool, truncate: bool):
    """Per-example fn for all `severities` of corruption `name` (cached)."""
    key = (apply, name, severities, table, q85, truncate)
    if key in self._fns:
      return self._fns[key]
    index = corruptions.ALL.index(name)
    q85_tables = jnp.asarray(jpeg_lib.quant_tables(85))

    def fn(variables, b, rng_key):
      x = b['image']
      ids = b['id']
      base_key = jax.random.fold_in(rng_key, index)

      def one(sev):
        keys = corruptions.keys_for_ids(jax.random.fold_in(base_key, sev),
                                        ids)
        y = corruptions.apply(name, keys, x, severity=sev, table=table)
        if truncate or q85:  # np.uint8(...) of the dataset writers.
          y = jnp.floor(y * 255.0 + 1e-3)
          if q85:
            y = jax.vmap(lambda im: jpeg_lib.jpeg_roundtrip_u8(
                im.astype(jnp.int32), q85_tables))(y)
          y = y.astype(jnp.float32) / 255.0
        return _correct(apply(variables, y), b['label'])

      hits = lax.map(one, jnp.asarray(severities, jnp.int32))
      return {f'correct/{s}': hits[i] for i, s in enumerate(severities)}

    self._fns[key] = fn
    return fn

  def _gen_fn(self, name: str, severities: tuple[int, ...], table: str,
              q85: bool):
    """Per-example fn: uint8 images [S, B, H, W, 3] of all severities."""
    key = ('gen', name, severities, table, q85)
    if key in self._fns:
      return self._fns[key]
    index = corruptions.ALL.index(name)
    q85_tables = jnp.asarray(jpeg_lib.quant_tables(85))

    def gen(variables, b, rng_key):
      del variables
      base_key = jax.random.fold_in(rng_key, index)

      def one(sev):
        keys = corruptions.keys_for_ids(jax.random.fold_in(base_key, sev),
                                        b['id'])
        y = corruptions.apply(name, keys, b['image'], severity=sev,
                              table=table)
        y = jnp.floor(y * 255.0 + 1e-3)
        if q85:
          y = jax.vmap(lambda im: jpeg_lib.jpeg_roundtrip_u8(
              im.astype(jnp.int32), q85_tables))(y)
        return y.astype(jnp.uint8)

      return {'images': lax.map(one, jnp.asarray(severities, jnp.int32))}

    self._fns[key] = gen
    return gen

  def _cached_images(self, ctx, name, severities, table, q85, ids):
    """{severity: uint8 images of this process's rows}, {id: row}."""
    key = (ctx.dataset.name, ctx.dataset.image_size, ctx.seed, name,
           severities, table, q85, np.asarray(ids).tobytes())
    if key in self._cache:
      return self._cache[key]
    out, rows = ctx.evaluator.map(
        self._gen_fn(name, severities, table, q85), ctx.batches(ids=ids),
        variables=None, key=jax.random.key(ctx.seed), axis=1)
    images = out['images']
    self._cache_bytes += images.nbytes
    if self._cache_bytes > _CACHE_LIMIT_BYTES:
      raise UserError(
          "config.corruption.mode='cached' would keep more than "
          f'{_CACHE_LIMIT_BYTES >> 30} GiB of corrupted images in memory; use '
          "mode 'fused' (or fewer num_examples).")
    value = ({s: images[i] for i, s in enumerate(severities)},
             {int(r): i for i, r in enumerate(rows)})
    self._cache[key] = value
    return value

  def run(self, ctx, model, cells) -> Iterator[tuple[base.Cell, dict]]:
    cfg = _cfg(ctx.config)
    table = self._table(cfg, model)
    mode = cfg.get('mode', 'fused')
    q85 = bool(cfg.get('jpeg_q85'))
    by_noise: dict[str, list[base.Cell]] = {}
    for c in cells:
      by_noise.setdefault(c.noise, []).append(c)
    rng_key = jax.random.key(ctx.seed)
    for noise, group in by_noise.items():
      ids = ctx.subset(group[0].n)
      if noise != 'none' and cfg.get('imagenet_c_dir'):
        yield from self._run_prepared(ctx, model, cfg, noise, group)
        continue
      sevs = tuple(sorted(int(c.params['severity']) for c in group))
      desc = f'corruption {model.name} {model.precision} {noise}'
      if noise == 'none':
        s = ctx.evaluator.sums(self._clean_fn(model.apply),
                               ctx.batches(ids=ids), variables=model.variables,
                               total=len(ids), desc=desc, keep=('correct/0',))
        results = {0: {**s, _OUT: outcomes.from_sums(s, 'correct/0')}}
      elif mode == 'cached':
        # All severities of the whole run's subset: reused by every model
        # and precision of this image size.
        all_sevs = tuple(_severities(cfg))
        images, row = self._cached_images(ctx, noise, all_sevs, table, q85,
                                          ctx.subset(group[0].n))
        results = {}
        for sev in sevs:
          stack = images[sev]

          def load(chunk, stack=stack):
            # .get: see the adversarial suite's transfer images.
            return stack[[row.get(int(i), 0) for i in chunk]]

          r = ctx.evaluator.sums(
              self._clean_fn(model.apply), ctx.batches(ids=ids, load=load),
              variables=model.variables, total=len(ids),
              desc=f'{desc} severity {sev}', keep=('correct/0',))
          results[sev] = {**r, _OUT: outcomes.from_sums(r, 'correct/0')}
      else:
        fn = self._fn(model.apply, noise, sevs, table, q85,
                      bool(cfg.get('truncate', True)))
        s = ctx.evaluator.sums(fn, ctx.batches(ids=ids),
                               variables=model.variables, key=rng_key,
                               total=len(ids), desc=desc,
                               keep=tuple(f'correct/{sev}' for sev in sevs))
        results = {sev: {'correct/0': s[f'correct/{sev}'], 'n': s['n'],
                         _OUT: outcomes.from_sums(s, f'correct/{sev}')}
                   for sev in sevs}
      for c in group:
        r = results[int(c.params['severity'])]
        yield c, {'accuracy': r['correct/0'] / r['n'], 'n': int(r['n']),
                  _OUT: r[_OUT]}

  def _run_prepared(self, ctx, model, cfg, noise, group):
    """Cells read from a prepared ImageNet-C folder."""
    from robustmq_jax.corruptions import imagenet_c  # pylint: disable=g-import-not-at-top
    from robustmq_jax.data.base import iter_batches  # pylint: disable=g-import-not-at-top
    fn = self._clean_fn(model.apply)
    for c in group:
      sev = int(c.params['severity'])
      ds = imagenet_c.ImageNetCFolder(cfg.imagenet_c_dir, noise, sev,
                                      model.image_size)
      n = c.n or cfg.get('num_examples') or 0
      ids = np.arange(ds.num_examples)
      if n and n < ds.num_examples:
        rng = np.random.default_rng(ctx.seed)
        ids = np.sort(rng.choice(ids, size=n, replace=False))
      batches = iter_batches(
          ds, ctx.batch_size // jax.process_count(), ids=ids,
          process_index=jax.process_index(),
          process_count=jax.process_count())
      s = ctx.evaluator.sums(fn, batches, variables=model.variables,
                             total=len(ids),
                             desc=f'imagenet-c {model.name} {noise} {sev}',
                             keep=('correct/0',))
      yield c, {'accuracy': s['correct/0'] / s['n'], 'n': int(s['n']),
                _OUT: outcomes.from_sums(s, 'correct/0')}
