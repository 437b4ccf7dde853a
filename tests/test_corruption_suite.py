"""The corruption suite end to end on an in-memory dataset and a linear model.

Reference: the same pipeline written out by hand (per-example keys from the
example ids, corruption, uint8 truncation, the model): accuracies must be
equal, in both modes ('fused' inside the evaluation step, 'cached' images
generated once), for any batch size. Also: config validation, cells, the
prepared-ImageNet-C-folder source, metrics and the report.
"""

import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
import pytest

from robustmq_jax import corruptions
from robustmq_jax import suites
from robustmq_jax.corruptions import metrics
from robustmq_jax.errors import UserError
from robustmq_jax.evaluation import Evaluator
from robustmq_jax.evaluation import make_mesh
from robustmq_jax.evaluation import replicate
from robustmq_jax.reporting import corruption as corruption_report
from robustmq_jax.suites import corruption as suite_lib
from tests import fakes

SIZE = 16
NAMES = ('gaussian_noise', 'contrast', 'jpeg_compression')


def _setup(batch_size=8, n=21, **cfg):
  config = ml_collections.ConfigDict()
  config.corruption = suite_lib.default_config(SIZE)
  config.corruption.names = NAMES
  config.corruption.num_examples = 0
  for k, v in cfg.items():
    config.corruption[k] = v
  mesh = make_mesh()
  dataset = fakes.random_dataset(n=n, size=SIZE, num_classes=4)
  ctx = suites.SuiteContext(
      config=config, dataset=dataset, evaluator=Evaluator(mesh),
      batch_size=batch_size, seed=3, cache_dir='/tmp/unused')
  params = fakes.linear_params(size=SIZE, num_classes=4)
  model = suites.ModelUnderTest(
      name='linear', precision='fp32', apply=fakes.linear_apply,
      variables=replicate(mesh, params), image_size=SIZE)
  return ctx, model, dataset, params


def _run(ctx, model):
  suite = suites.get_suite('corruption')
  suite.validate(ctx.config)
  return {(c.noise, c.params['severity']): m
          for c, m in suite.run(ctx, model, suite.cells(ctx, model))}


def _reference(dataset, params, seed, name, severity, ids):
  """The suite's pipeline, by hand, on the whole chosen subset at once."""
  x = jnp.asarray(dataset.images(ids), jnp.float32) / 255.0
  key = jax.random.fold_in(jax.random.fold_in(
      jax.random.key(seed), corruptions.ALL.index(name)), severity)
  keys = corruptions.keys_for_ids(key, jnp.asarray(ids))
  y = corruptions.apply(name, keys, x, severity=severity, table='32')
  y = jnp.floor(y * 255.0 + 1e-3) / 255.0
  pred = np.argmax(np.asarray(fakes.linear_apply(params, y)), -1)
  return float(np.mean(pred == dataset.labels(ids)))


def test_cells_and_params():
  ctx, model, _, _ = _setup(severities=(2, 5), num_examples=10)
  cells = suites.get_suite('corruption').cells(ctx, model)
  assert [c.noise for c in cells] == ['none'] + [n for n in NAMES
                                                 for _ in (2, 5)]
  assert cells[1].params == {'severity': 2, 'table': '32'}
  assert all(c.n == 10 for c in cells)


@pytest.mark.parametrize('mode', ['fused', 'cached'])
def test_matches_hand_written_pipeline(mode):
  ctx, model, dataset, params = _setup(mode=mode, severities=(1, 4))
  got = _run(ctx, model)
  ids = np.arange(dataset.num_examples)
  assert got[('none', 0)]['n'] == dataset.num_examples
  for name in NAMES:
    for sev in (1, 4):
      want = _reference(dataset, params, ctx.seed, name, sev, ids)
      assert got[(name, sev)]['accuracy'] == pytest.approx(want, abs=1e-6)


def test_modes_and_batch_sizes_agree():
  results = []
  for mode, bs in (('fused', 8), ('fused', 24), ('cached', 16)):
    ctx, model, _, _ = _setup(batch_size=bs, mode=mode, num_examples=13)
    results.append({k: v['accuracy'] for k, v in _run(ctx, model).items()})
  assert results[0] == results[1] == results[2]


def test_jpeg_q85_changes_images_not_shapes():
  ctx, model, _, _ = _setup(jpeg_q85=True, severities=(3,),
                            names=('contrast',))
  got = _run(ctx, model)
  assert set(got) == {('none', 0), ('contrast', 3)}
  cells = suites.get_suite('corruption').cells(ctx, model)
  assert cells[1].params['jpeg_q85'] is True


@pytest.mark.parametrize('field,value', [
    ('names', ('fog', 'not_a_corruption')), ('severities', (0, 3)),
    ('table', '128'), ('mode', 'lazy'), ('num_examples', -1),
    ('jpeg_q85', 'yes'), ('imagenet_c_dir', '/no/such/folder'),
])
def test_validate_rejects(field, value):
  ctx, _, _, _ = _setup()
  ctx.config.corruption = ml_collections.ConfigDict(
      {**ctx.config.corruption.to_dict(), field: value})
  with pytest.raises(UserError, match=f'config.corruption.{field}'):
    suites.get_suite('corruption').validate(ctx.config)


def test_validate_rejects_unknown_field_and_untruncated_cache():
  ctx, _, _, _ = _setup(mode='cached', truncate=False)
  with pytest.raises(UserError, match='truncate'):
    suites.get_suite('corruption').validate(ctx.config)
  ctx, _, _, _ = _setup()
  ctx.config.corruption.severity = 3
  with pytest.raises(UserError, match='config.corruption'):
    suites.get_suite('corruption').validate(ctx.config)


def test_prepared_imagenet_c_folder(tmp_path):
  rng = np.random.default_rng(0)
  wnids = ['n01', 'n02', 'n03']
  for sev in (1, 2):
    for w in wnids:
      os.makedirs(tmp_path / 'fog' / str(sev) / w)
      for j in range(2):
        img = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        Image.fromarray(img).save(tmp_path / 'fog' / str(sev) / w /
                                  f'{j}.png')
  ctx, model, _, params = _setup(names=('fog',), severities=(1, 2),
                                 imagenet_c_dir=str(tmp_path), clean=False)
  got = _run(ctx, model)
  from robustmq_jax.corruptions import imagenet_c  # pylint: disable=g-import-not-at-top
  for sev in (1, 2):
    ds = imagenet_c.ImageNetCFolder(str(tmp_path), 'fog', sev, SIZE)
    assert list(ds.labels(range(6))) == [0, 0, 1, 1, 2, 2]
    x = ds.images(range(6)).astype(np.float32) / 255.0
    pred = np.argmax(np.asarray(fakes.linear_apply(params, x)), -1)
    assert got[('fog', sev)]['accuracy'] == pytest.approx(
        np.mean(pred == ds.labels(range(6))))
    assert got[('fog', sev)]['n'] == 6
  cells = suites.get_suite('corruption').cells(ctx, model)
  assert cells[0].params == {'severity': 1, 'table': '224',
                             'source': 'imagenet-c'}


# ---------------------------------------------------------------- metrics


def test_alexnet_table_keyed_by_name():
  assert set(metrics.ALEXNET_ERRORS) == set(corruptions.ALL)
  # The averages printed beside the table in the hendrycks README.
  assert np.mean(metrics.ALEXNET_ERRORS['snow']) == pytest.approx(0.866816)
  assert np.mean(metrics.ALEXNET_ERRORS['jpeg_compression']) == (
      pytest.approx(0.6065))
  alex = {c: metrics.alexnet_errors(c) for c in metrics.ALEXNET_ERRORS}
  assert metrics.mce(alex) == pytest.approx(1.0)
  assert metrics.relative_mce(alex, metrics.ALEXNET_CLEAN_ERROR) == (
      pytest.approx(1.0))
  # Order of the mapping never matters; the 4 extras never count.
  shuffled = dict(reversed(list(alex.items())))
  shuffled['saturate'] = {s: 0.0 for s in range(1, 6)}
  assert metrics.mce(shuffled) == pytest.approx(1.0)


def test_ce_and_relative_ce_by_hand():
  errs = {1: 0.2, 2: 0.4}
  base = {1: 0.4, 2: 0.6, 3: 0.9}
  assert metrics.corruption_error(errs, base) == pytest.approx(0.6)
  assert metrics.relative_corruption_error(errs, 0.1, base, 0.3) == (
      pytest.approx((0.1 + 0.3) / (0.1 + 0.3)))
  assert math.isnan(metrics.corruption_error(errs, {1: 0.0, 2: 0.0}))


def _rows(dataset='sample', table='32'):
  rows = []
  accs = {'fp32': {'none': 0.9, 'fog': (0.8, 0.6), 'contrast': (0.85, 0.8)},
          'w4a4': {'none': 0.85, 'fog': (0.5, 0.3), 'contrast': (0.8, 0.79)}}
  for prec, by_noise in accs.items():
    for noise, vals in by_noise.items():
      if noise == 'none':
        vals, sevs = (vals,), (0,)
      else:
        sevs = (1, 2)
      for s, a in zip(sevs, vals):
        rows.append({'dataset': dataset, 'model': 'm', 'precision': prec,
                     'suite': 'corruption', 'noise': noise, 'n': 10,
                     'params': {'severity': s, 'table': table},
                     'accuracy': a})
  return rows


def test_report_fp32_normalised():
  md = corruption_report.section(_rows()).markdown()
  assert 'fp32 of the same model' in md
  # fp32 normalised by itself: mCE 100.
  fp32_line = next(l for l in md.splitlines() if l.startswith('| m | fp32'))
  assert '| 100.0 | 100.0 |' in fp32_line
  assert 'most harmful **fog**' in md and 'least harmful **contrast**' in md
  # w4a4 fog CE = (0.5 + 0.7) / (0.2 + 0.4) = 2.
  fog = next(l for l in md.splitlines() if l.startswith('| fog |')
             and '200.0' in l)
  assert fog


def test_report_alexnet_normalised_on_imagenet():
  md = corruption_report.section(_rows('imagenet2012', '224')).markdown()
  assert 'AlexNet' in md
  # fp32 fog CE = (0.2 + 0.4) / (0.67474 + 0.76050).
  want = 100 * 0.6 / (0.67474 + 0.76050)
  assert f'{want:.1f}' in md
