"""The strip of example images in report.html: what each noise does.

One test image of the run's dataset under each corruption the run evaluated
at severities 1-5 (the suite's jitted kernels, one compiled program for
all), and, when the run has adversarial rows, an FGSM adversarial example
against the float model with its perturbation amplified. Computed at report
time, once per workdir (the PNGs and `strip.json` under plots/examples/ are
reused while the dataset, image and model stay the same). The corrupted
images, whose one compile costs some 10-30 s on a CPU, are also kept in a
per-user cache (`$XDG_CACHE_HOME/robustmq_jax/examples`, keyed by dataset,
table, seed and the corruption code; the adversarial example by the
checkpoint's files and the budget) so that a new workdir reuses them.
"""

import dataclasses
import hashlib
import json
import os
import shutil
from typing import Any, Mapping, Sequence

from absl import logging
import numpy as np
from PIL import Image

from robustmq_jax.results import files as files_lib

FOLDER = os.path.join('plots', 'examples')
_META = 'strip.json'
_VERSION = 2
_DEFAULT_EPS_255 = 8.0
_CANDIDATES = 16  # Images tried for an adversarial example that flips.


@dataclasses.dataclass
class Strip:
  """Example images (PNG files under `folder`) and what they show.

  Attributes:
    folder: where the PNGs are.
    original: file of the clean image.
    corruptions: [(name, is_extra, [file at severity 1..5])].
    adversarial: {'clean', 'perturbation', 'adversarial': files; 'eps',
      'label', 'pred_clean', 'pred_adv', 'model', 'amplify'} or None.
    note: one sentence on what was computed or skipped and why.
  """
  folder: str
  original: str
  corruptions: list[Any]
  adversarial: dict[str, Any] | None
  note: str


def _save_png(folder: str, name: str, image: np.ndarray) -> str:
  img = np.asarray(image)
  if img.dtype != np.uint8:
    img = np.clip(np.rint(255.0 * img), 0, 255).astype(np.uint8)
  Image.fromarray(img).save(os.path.join(folder, name))
  return name


def _key(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  dataset = sorted({r.get('dataset', '') for r in rows})[0]
  floats = sorted({r['model'] for r in rows if r.get('dataset') == dataset
                   and r['precision'] == 'fp32'}) or sorted(
                       {r['model'] for r in rows})
  tables = sorted({str(r['params']['table']) for r in rows
                   if r.get('suite') == 'corruption' and
                   'table' in (r.get('params') or {})})
  eps = sorted({float(r['params']['eps_255']) for r in rows
                if r.get('noise') in ('fgsm', 'pgd_linf') and
                'eps_255' in (r.get('params') or {})})
  seeds = sorted({int(r.get('seed', 0)) for r in rows})
  names = sorted({r['noise'] for r in rows if r.get('suite') == 'corruption'
                  and r.get('dataset') == dataset and r['noise'] != 'none'})
  return {'version': _VERSION, 'dataset': dataset, 'model': floats[0],
          'table': tables[0] if tables else None,
          'eps_255': eps[-1] if eps else _DEFAULT_EPS_255,
          'seed': seeds[0] if seeds else 0, 'corruptions': names,
          'adversarial': any(r.get('suite') == 'adversarial' for r in rows)}


def cache_dir() -> str:
  """The per-user folder of cached corrupted example images."""
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(
      os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'robustmq_jax', 'examples')


def _code_hash() -> str:
  """Hash of the corruption kernels' source (a change invalidates caches)."""
  folder = os.path.join(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))), 'corruptions')
  h = hashlib.sha256()
  for name in sorted(os.listdir(folder)):
    if name.endswith('.py'):
      with open(os.path.join(folder, name), 'rb') as f:
        h.update(name.encode() + f.read())
  return h.hexdigest()[:16]


def _corruption_strip(folder, x, seed, table, names) -> list[Any]:
  """Corruptions `names` at severities 1-5 of x [1, H, W, 3] in [0, 1]."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from robustmq_jax import corruptions  # pylint: disable=g-import-not-at-top
  keys = corruptions.keys_for_ids(jax.random.key(seed), np.zeros(1, np.int32))
  sevs = jnp.arange(1, 6, dtype=jnp.int32)

  def all_corruptions(images):
    out = {}
    for name in names:
      fn = lambda s, name=name: corruptions.apply(
          name, keys, images, severity=s, table=table)[0]
      out[name] = jax.lax.map(fn, sevs)
    return out

  lowered = jax.jit(all_corruptions).lower(jnp.asarray(x, jnp.float32))
  try:  # A cheaper compile: the program runs once on one image.
    compiled = lowered.compile({'xla_backend_optimization_level': 0,
                                'xla_llvm_disable_expensive_passes': True})
  except Exception:  # pylint: disable=broad-except
    compiled = lowered.compile()
  got = jax.device_get(compiled(jnp.asarray(x, jnp.float32)))
  out = []
  for name in names:
    files = [_save_png(folder, f'{name}_{s}.png', got[name][s - 1])
             for s in range(1, 6)]
    out.append((name, name in corruptions.EXTRA, files))
  return out


def _through_cache(ident: Any, folder: str, compute, files_of):
  """compute(folder) -> meta, through the per-user cache.

  `files_of(meta)` lists the PNGs (in `folder`) a result consists of; they
  are copied from / into the cache entry of `ident` (any JSON value).
  """
  cache = os.path.join(cache_dir(), hashlib.sha256(json.dumps(
      ident, sort_keys=True).encode()).hexdigest()[:20])
  meta_path = os.path.join(cache, 'meta.json')
  try:
    with open(meta_path) as f:
      meta = json.load(f)
    for name in files_of(meta):
      shutil.copyfile(os.path.join(cache, name), os.path.join(folder, name))
    return meta
  except (OSError, ValueError, TypeError, KeyError):
    pass
  meta = compute(folder)
  try:
    os.makedirs(cache, exist_ok=True)
    for name in files_of(meta):
      shutil.copyfile(os.path.join(folder, name), os.path.join(cache, name))
    # A unique temporary name: two runs may fill the user cache at once.
    files_lib.write_atomic(meta_path, json.dumps(meta))
  except OSError as e:  # A read-only home: no cache, nothing lost.
    logging.info('example image cache not written: %s', e)
  return meta


def _cached_corruption_strip(folder, dataset, x, key) -> list[Any]:
  """`_corruption_strip` through the per-user cache (copied into folder)."""
  from robustmq_jax import corruptions  # pylint: disable=g-import-not-at-top
  names = [n for n in corruptions.ALL if n in key['corruptions']]
  if not names:
    return []
  ident = ['corruptions', key['dataset'], getattr(dataset, 'image_size', None),
           key['table'], key['seed'], names, _code_hash()]
  return _through_cache(
      ident, folder,
      lambda f: _corruption_strip(f, x, key['seed'], key['table'], names),
      lambda meta: [name for _, _, files in meta for name in files])


def _checkpoint_stamp(checkpoint: str) -> list[Any]:
  """Path, size and mtime of every file of a checkpoint folder."""
  out = []
  for name in sorted(os.listdir(checkpoint)):
    st = os.stat(os.path.join(checkpoint, name))
    out.append([name, st.st_size, st.st_mtime_ns])
  return [os.path.abspath(checkpoint), out]


def _cached_adversarial(folder, dataset, key, checkpoint) -> dict[str, Any]:
  """`_adversarial` through the per-user cache."""
  ident = ['adversarial', key['dataset'], key['model'], key['eps_255'],
           _checkpoint_stamp(checkpoint), _VERSION]
  return _through_cache(
      ident, folder, lambda f: _adversarial(f, dataset, key, checkpoint),
      lambda meta: [meta[k] for k in ('clean', 'perturbation',
                                      'adversarial')])


def default_checkpoint(dataset: str, model: str) -> str | None:
  """This repository's float checkpoint of `model` for the sample data."""
  if dataset != 'sample':
    return None
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return os.path.join(os.path.dirname(root), 'checkpoints', 'sample', model,
                      'fp32')


def _adversarial(folder, dataset, key, checkpoint) -> dict[str, Any]:
  """FGSM at the run's largest L-inf budget against the float model."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from robustmq_jax import attacks  # pylint: disable=g-import-not-at-top
  from robustmq_jax import checkpoints  # pylint: disable=g-import-not-at-top
  module, variables, _ = checkpoints.load(checkpoint)
  ids = np.arange(min(_CANDIDATES, dataset.num_examples))
  x = jnp.asarray(dataset.images(ids), jnp.float32) / 255.0
  y = jnp.asarray(dataset.labels(ids), jnp.int32)
  eps = key['eps_255'] / 255.0

  @jax.jit
  def run(x, y):
    logits = lambda z: module.apply(variables, z, train=False)
    adv = attacks.fgsm(logits, x, y, eps=eps)
    return adv, jnp.argmax(logits(x), -1), jnp.argmax(logits(adv), -1)

  adv, p0, p1 = jax.device_get(run(x, y))
  y = np.asarray(y)
  flipped = np.flatnonzero((p0 == y) & (p1 != y))
  right = np.flatnonzero(p0 == y)
  i = int(flipped[0] if flipped.size else (right[0] if right.size else 0))
  delta = adv[i] - np.asarray(x[i])
  amplify = 0.5 / eps
  return {
      'clean': _save_png(folder, 'adv_clean.png', np.asarray(x[i])),
      'perturbation': _save_png(folder, 'adv_perturbation.png',
                                np.clip(0.5 + amplify * delta, 0, 1)),
      'adversarial': _save_png(folder, 'adv_example.png', adv[i]),
      'eps': f'{key["eps_255"]:g}/255', 'label': int(y[i]),
      'pred_clean': int(p0[i]), 'pred_adv': int(p1[i]),
      'model': key['model'], 'amplify': float(amplify), 'example_id': i}


def _load(folder: str, key: Mapping[str, Any]) -> Strip | None:
  try:
    with open(os.path.join(folder, _META)) as f:
      meta = json.load(f)
  except (OSError, ValueError):
    return None
  if meta.get('key') != dict(key):
    return None
  files = [meta['original']] + [f for _, _, fs in meta['corruptions']
                                for f in fs]
  if not all(os.path.exists(os.path.join(folder, f)) for f in files):
    return None
  return Strip(folder, meta['original'], meta['corruptions'],
               meta['adversarial'], meta['note'])


def cached_strip(workdir: str, rows: Sequence[Mapping[str, Any]]
                 ) -> Strip | None:
  """The strip kept in `workdir` for `rows`, or None if none matches."""
  return _load(os.path.join(workdir, FOLDER), _key(rows)) if rows else None


def write_example_strip(workdir: str, rows: Sequence[Mapping[str, Any]], *,
                        checkpoints: Mapping[str, str] | None = None
                        ) -> Strip | None:
  """Computes (or reuses) the example images of the run's dataset.

  Args:
    workdir: the run's folder (images go to plots/examples/).
    rows: result rows; their dataset, corruption table, L-inf budgets and
      float model choose what is shown.
    checkpoints: {model: float checkpoint folder} for the adversarial
      example (default: `default_checkpoint`).

  Returns:
    The strip, or None when the dataset cannot be opened here (logged).
  """
  if not rows:
    return None
  key = _key(rows)
  if not key['corruptions'] and not key['adversarial']:
    return None
  folder = os.path.join(workdir, FOLDER)
  cached = _load(folder, key)
  if cached is not None:
    return cached
  from robustmq_jax import data  # pylint: disable=g-import-not-at-top
  try:
    dataset = data.get_dataset(key['dataset'])
    x = dataset.images([0]).astype(np.float32) / 255.0
  except Exception as e:  # pylint: disable=broad-except
    logging.warning('example images skipped: %s', e)
    return None
  os.makedirs(folder, exist_ok=True)
  original = _save_png(folder, 'original.png', x[0])
  corrs = _cached_corruption_strip(folder, dataset, x, key)
  ckpt = (checkpoints or {}).get(key['model']) or default_checkpoint(
      key['dataset'], key['model'])
  adv, why = None, ''
  if not key['adversarial']:
    why = 'no adversarial example: the run has no adversarial rows'
  elif ckpt and os.path.isdir(ckpt):
    try:
      adv = _cached_adversarial(folder, dataset, key, ckpt)
    except Exception as e:  # pylint: disable=broad-except
      why = f'the adversarial example failed ({type(e).__name__}: {e})'
  else:
    why = (f'no adversarial example: no float checkpoint of {key["model"]} '
           'for this dataset is known to the report (pass checkpoints= to '
           'write_report)')
  note = (f'test image 0 of {key["dataset"]} under the {len(corrs)} '
          'corruptions of the run at severities 1–5' + (
              f'; FGSM at ε={adv["eps"]} against the float {adv["model"]}, '
              f'perturbation amplified {adv["amplify"]:.0f}×.' if adv else
              f'; {why}.'))
  meta = {'key': key, 'original': original, 'corruptions': corrs,
          'adversarial': adv, 'note': note}
  files_lib.write_atomic(os.path.join(folder, _META),
                         json.dumps(meta, indent=1))
  return Strip(folder, original, corrs, adv, note)
