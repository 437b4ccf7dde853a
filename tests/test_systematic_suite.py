"""The systematic suite end to end on an in-memory JPEG dataset.

Reference for the grid: the same pipeline on the host (named decoder, then
the real PIL / OpenCV resize, centre crop, the linear model in float64):
per-cell accuracies must be equal, with the resizes emulated on device and
with the libraries on the host (the CPU default); the two backends' resized
images agree within one level. Also: skipped decoders, decode failures,
subsets, the 'native' protocol and config validation.
"""

import io

import ml_collections
import numpy as np
import pytest
from PIL import Image

from robustmq_jax import suites
from robustmq_jax import systematic
from robustmq_jax.errors import UserError
from robustmq_jax.evaluation import Evaluator
from robustmq_jax.evaluation import make_mesh
from robustmq_jax.evaluation import replicate
from robustmq_jax.reporting import systematic as report
from robustmq_jax.suites import systematic as suite_lib
from robustmq_jax.systematic.host_resize import library_resize

NUM_CLASSES = 4


class JpegDataset:
  """Smooth random photos-like images of several sizes, stored as JPEG."""

  name = 'jpegs'
  num_classes = NUM_CLASSES
  image_size = 32

  def __init__(self, n=20, shapes=((32, 32), (40, 30), (27, 45)), bad=()):
    rng = np.random.default_rng(0)
    self._files, self._labels = [], rng.integers(0, NUM_CLASSES, n)
    for i in range(n):
      h, w = shapes[i % len(shapes)]
      low = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
      img = Image.fromarray(low).resize((w, h), Image.Resampling.BICUBIC)
      noisy = np.clip(np.asarray(img, np.int32) +
                      rng.integers(-30, 30, (h, w, 3)), 0, 255)
      buf = io.BytesIO()
      Image.fromarray(noisy.astype(np.uint8)).save(buf, 'JPEG', quality=85)
      self._files.append(b'\xff\xd8garbage' if i in bad else buf.getvalue())
    self.num_examples = n

  def jpeg_bytes(self, idx):
    return self._files[idx]

  def labels(self, ids):
    return self._labels[np.asarray(ids)].astype(np.int32)

  def images(self, ids):
    raise AssertionError('the systematic suite must decode jpeg_bytes')


def _weights():
  rng = np.random.default_rng(1)
  return rng.normal(size=(32 * 32 * 3, NUM_CLASSES)).astype(np.float32)


def _apply(v, x):
  return x.reshape(x.shape[0], -1) @ v['w']


def _setup(dataset=None, **cfg):
  config = ml_collections.ConfigDict()
  config.systematic = suite_lib.default_config(32)
  for k, v in {'num_examples': 0, **cfg}.items():
    if isinstance(v, str) and k in ('decoders', 'resizes'):
      v = (v,)
    config.systematic[k] = v
  mesh = make_mesh()
  ctx = suites.SuiteContext(
      config=config, dataset=dataset or JpegDataset(),
      evaluator=Evaluator(mesh), batch_size=16, seed=0, cache_dir='/tmp/x')
  model = suites.ModelUnderTest(
      name='linear', precision='fp32', apply=_apply,
      variables=replicate(mesh, {'w': _weights()}), image_size=32)
  suite = suites.get_suite('systematic')
  suite.validate(config)
  return suite, ctx, model


def _run(suite, ctx, model):
  out = {}
  for cell, metrics in suite.run(ctx, model, suite.cells(ctx, model)):
    out[(cell.params['decoder'], cell.noise)] = (cell, metrics)
  return out


def _host_accuracy(ds, ids, decoder, method, proto):
  w = _weights().astype(np.float64)
  hits = 0
  for i in ids:
    img = systematic.decode(ds.jpeg_bytes(int(i)), decoder=decoder)
    img = library_resize(img, proto.size, method)
    o = proto.offset
    img = img[o:o + proto.crop, o:o + proto.crop]
    logits = (img.reshape(-1).astype(np.float64) / 255.0) @ w
    hits += int(np.argmax(logits) == ds.labels([i])[0])
  return hits / len(ids)


@pytest.mark.parametrize('backend', ['device', 'host'])
def test_grid_equals_host_pipeline(backend):
  decoders = [d for d in ('pil', 'ffmpeg', 'simplejpeg_fastdct')
              if d in systematic.available_decoders()]
  suite, ctx, model = _setup(decoders=tuple(decoders), resize_backend=backend)
  assert suite._backend(ctx) == backend  # pylint: disable=protected-access
  res = _run(suite, ctx, model)
  assert set(res) == {(d, m) for d in decoders for m in systematic.METHODS}
  proto = suite._protocol(ctx, model)  # pylint: disable=protected-access
  assert (proto.resize_to, proto.crop, proto.offset) == (36, 32, 2)
  for (d, m), (cell, metrics) in res.items():
    assert cell.params == {'decoder': d, 'protocol': 'imagenet',
                           'resize_to': 36, 'crop': 32}
    assert metrics['n'] == 20 and metrics['decode_failures'] == 0
    assert metrics['resize_backend'] == backend
    ref = _host_accuracy(ctx.dataset, range(20), d, m, proto)
    assert metrics['accuracy'] == pytest.approx(ref), (d, m)


def test_backends_resize_within_one_level_and_auto_picks_host_on_cpu():
  ds = JpegDataset(n=12, bad=(5,))
  stacks = {}
  for backend in ('device', 'host'):
    suite, ctx, model = _setup(ds, decoders='pil', resize_backend=backend)
    batches = list(suite._batches(  # pylint: disable=protected-access
        ctx, np.arange(12), 'pil', systematic.METHODS,
        suite._protocol(ctx, model)))  # pylint: disable=protected-access
    stacks[backend] = [{k: np.asarray(v) for k, v in b.as_dict().items()}
                       for b in batches]
  for dev, host in zip(stacks['device'], stacks['host'], strict=True):
    assert dev['image'].shape == host['image'].shape
    np.testing.assert_array_equal(dev['ok'], host['ok'])
    d = np.abs(dev['image'].astype(int) - host['image'].astype(int))
    d = d[dev['ok'] & dev['mask']]
    assert d.max() <= 1
    assert d[:, :6].max() == 0  # Pillow's six are bit-exact.
  ok = np.concatenate([b['ok'][b['mask']] for b in stacks['host']])
  assert ok.tolist() == [i != 5 for i in range(12)]
  suite, ctx, _ = _setup(decoders='pil')
  assert suite._backend(ctx) == 'host'  # pylint: disable=protected-access


def test_native_protocol_on_model_sized_images_is_identity():
  ds = JpegDataset(n=12, shapes=((32, 32),))
  suite, ctx, model = _setup(ds, decoders='pil', protocol='native')
  accs = {m: met['accuracy'] for (_, m), (_, met) in
          _run(suite, ctx, model).items()}
  assert len(set(accs.values())) == 1, accs  # 32 -> 32: every method copies


def test_skipped_decoders_and_failures_and_subset():
  missing = [d.name for d in systematic.list_decoders() if not d.available]
  ds = JpegDataset(n=20, bad=(3,))
  suite, ctx, model = _setup(ds, decoders=('pil',) + tuple(missing[:1]),
                             resizes=('pil_bilinear', 'cv2_nearest'),
                             num_examples=10)
  cells = suite.cells(ctx, model)
  assert [c.params['decoder'] for c in cells] == ['pil', 'pil']
  assert all(c.n == 10 for c in cells)
  ids = ctx.subset(10)
  rows = []
  for cell, met in suite.run(ctx, model, cells):
    assert met['n'] == 10
    assert met['decode_failures'] == int(3 in ids)
    assert set(met['skipped_decoders']) == set(missing[:1])
    rows.append({'dataset': 'jpegs', 'model': 'linear', 'precision': 'fp32',
                 'suite': 'systematic', 'noise': cell.noise,
                 'params': dict(cell.params), **met})
  text = report.section(rows).markdown()
  for name in missing[:1]:
    assert name in text


@pytest.mark.parametrize('field,value', [
    ('decoders', ('pil', 'libjpeg9000')), ('resizes', 'pil_magic'),
    ('protocol', 'squash'), ('resize_to', -1), ('num_examples', 1.5)])
def test_bad_config_is_a_user_error(field, value):
  config = ml_collections.ConfigDict({'systematic': {field: value}})
  with pytest.raises(UserError, match=field):
    suites.get_suite('systematic').validate(config)


def test_unknown_field_and_small_resize_to():
  config = ml_collections.ConfigDict({'systematic': {'decoderz': 'pil'}})
  with pytest.raises(UserError, match='decoderz'):
    suites.get_suite('systematic').validate(config)
  suite, ctx, model = _setup(resize_to=30)
  with pytest.raises(UserError, match='resize_to'):
    suite.cells(ctx, model)


def test_summary_names_the_harmful_resizes():
  rows = []
  for d, base in (('pil', 0.9), ('opencv', 0.88)):
    for i, m in enumerate(systematic.METHODS):
      acc = base - (0.2 if 'nearest' in m else 0.01 * (i % 3))
      if m == 'cv2_area':
        acc = base + 0.01
      rows.append({'dataset': 'd', 'model': 'm', 'precision': 'fp32',
                   'suite': 'systematic', 'noise': m, 'accuracy': acc,
                   'n': 10,
                   'params': {'decoder': d, 'protocol': 'imagenet',
                              'resize_to': 36, 'crop': 32}})
  s = report.grid_stats(rows)
  assert s['ref'] == pytest.approx(0.89)
  assert 'nearest' in s['most_harmful'] and s['least_harmful'] == 'cv2_area'
  assert s['decoder_order'] == ['opencv', 'pil']
  text = report.section(rows).markdown()
  assert '**cv2_area**' in text and '| pil |' in text
  assert 'grid mean' in text and 'Drop vs reference' in text


def test_fn_is_cached_per_model_and_methods():
  suite = suites.get_suite('systematic')
  f = suite._fn(_apply, ('pil_box',))  # pylint: disable=protected-access
  assert f is suite._fn(_apply, ('pil_box',))  # pylint: disable=protected-access


@pytest.mark.parametrize('backend', ['device', 'host'])
def test_decoded_images_are_kept_per_dataset(monkeypatch, backend):
  """A second precision on the same dataset decodes nothing again; another
  dataset (same ids, other files) is decoded afresh and scored on its own
  images."""
  decoded = []
  real = systematic.decode_many

  def counting(datas, decoder):
    decoded.append(len(datas))
    return real(datas, decoder=decoder)

  monkeypatch.setattr(systematic, 'decode_many', counting)
  suite, ctx, model = _setup(decoders='pil', resize_backend=backend)
  first = _run(suite, ctx, model)
  assert sum(decoded) == 20
  assert _run(suite, ctx, model) == first and sum(decoded) == 20
  other = JpegDataset(n=20, shapes=((40, 30),))
  suite, ctx2, model = _setup(other, decoders='pil', resize_backend=backend)
  res = _run(suite, ctx2, model)
  assert sum(decoded) == 40
  proto = suite._protocol(ctx2, model)  # pylint: disable=protected-access
  for (d, m), (_, metrics) in res.items():
    assert metrics['accuracy'] == pytest.approx(
        _host_accuracy(other, range(20), d, m, proto)), (d, m)
