"""The adversarial suite on an in-memory dataset and the digits CNN.

A float model, an honest "quantized" model (4-bit input rounding with a
straight-through gradient twin) and a masked one (the same rounding, no
straight-through twin: zero input gradients) show that the masking checks
separate real robustness from gradient masking.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from robustmq_jax import attacks
from robustmq_jax import suites
from robustmq_jax.errors import UserError
from robustmq_jax.evaluation import Evaluator
from robustmq_jax.evaluation import make_mesh
from robustmq_jax.reporting import adversarial as adversarial_report
from robustmq_jax.suites import adversarial
from robustmq_jax.suites import transfer_cache
from tests import fakes
from robustmq_jax.testing import digits_cnn as helpers

N = 40


def _dataset():
  _, _, x, y = helpers.digits()
  images = np.round(x[:N] * 255).astype(np.uint8)
  return fakes.ArrayDataset(images, y[:N], name='digits16')


def _config(**overrides):
  c = ml_collections.ConfigDict()
  c.adversarial = adversarial.default_config(16)
  c.adversarial.update(dict(
      attacks=('fgsm', 'pgd_linf', 'pgd_l2', 'autoattack', 'square'),
      linf_eps_255=(10.0, 25.0), l2_eps=(1.0,), pgd_steps=4,
      autoattack_eps_255=25.0, autoattack_steps=4, autoattack_targets=2,
      autoattack_queries=20, square_queries=40, num_examples=0,
      autoattack_num_examples=24))
  c.adversarial.update(overrides)
  return c


def _context(config):
  return suites.SuiteContext(
      config=config, dataset=_dataset(), evaluator=Evaluator(make_mesh()),
      batch_size=16, seed=0, cache_dir='/tmp/unused')


def _models():
  params = helpers.trained_params()
  net = helpers.DigitsCNN()
  quantize = lambda x: jnp.round(x * 15) / 15
  ste = lambda x: x + jax.lax.stop_gradient(quantize(x) - x)
  fp = suites.ModelUnderTest(
      name='cnn', precision='fp32', apply=net.apply, variables=params,
      image_size=16)
  honest = suites.ModelUnderTest(
      name='cnn', precision='a4', apply=lambda v, x: net.apply(
          v, quantize(x)), grad_apply=lambda v, x: net.apply(v, ste(x)),
      serve_apply=lambda v, x: net.apply(v, quantize(x)),
      serve_variables=params, variables=params, float_model=fp,
      image_size=16, method='ptq')
  masked = suites.ModelUnderTest(
      name='cnn', precision='a4-masked',
      apply=lambda v, x: net.apply(v, quantize(x)), variables=params,
      float_model=fp, image_size=16, method='ptq')
  return fp, honest, masked


def test_registered_with_default_config():
  assert 'adversarial' in suites.list_suites()
  imagenet = adversarial.default_config(224)
  assert tuple(imagenet.linf_eps_255) == (0.5, 1.0, 2.0, 4.0)
  assert imagenet.pgd_steps == 20 and imagenet.step_ratio.linf == 0.25
  assert imagenet.autoattack_eps_255 == 4.0
  assert imagenet.autoattack_num_examples == 5000
  assert (imagenet.autoattack_steps, imagenet.autoattack_targets,
          imagenet.autoattack_queries) == (100, 9, 5000)
  sample = adversarial.default_config(32)
  assert sample.attacks == ('fgsm', 'pgd_linf')
  assert sample.autoattack_eps_255 == 1.0 and sample.pgd_steps == 10


def test_cells_cover_the_grid():
  config = _config()
  ctx = _context(config)
  fp, honest, _ = _models()
  cells = suites.get_suite('adversarial').cells(ctx, honest)
  names = [c.noise for c in cells]
  assert names == ['fgsm', 'fgsm', 'pgd_linf', 'pgd_linf', 'pgd_l2',
                   'autoattack', 'square']
  pgd = cells[2]
  assert pgd.params['eps'] == pytest.approx(10 / 255)
  assert pgd.params['step_size'] == pytest.approx(2.5 / 255)
  assert pgd.n is None and cells[-1].n == 24
  assert cells == suites.get_suite('adversarial').cells(ctx, fp)


@pytest.mark.parametrize('bad, match', [
    ({'attacks': ('pgd_l3',)}, 'attacks'),
    ({'linf_eps_255': (1.0, -2.0)}, 'linf_eps_255'),
    ({'pgd_steps': 0}, 'pgd_steps'),
    ({'autoattack_version': 'rand'}, 'autoattack_version'),
    ({'batch_size': 3}, 'batch_size'),
    ({'masking_margin': 2.0}, 'masking_margin'),
    ({'no_such_field': 1}, 'adversarial'),
])
def test_validation_names_the_field(bad, match):
  config = _config()
  with config.adversarial.unlocked():
    for k, v in bad.items():
      config.adversarial[k] = v
  with pytest.raises(UserError, match=match):
    suites.get_suite('adversarial').validate(config)


def _run(model, config, suite=None):
  suite = suite or suites.get_suite('adversarial')
  ctx = _context(config)
  cells = suite.cells(ctx, model)
  return {(c.noise, round(c.params['eps'], 6)): m
          for c, m in suite.run(ctx, model, cells)}


def test_runs_and_flags_gradient_masking():
  config = _config(attacks=('fgsm', 'pgd_linf'), linf_eps_255=(25.0,))
  fp, honest, masked = _models()
  eps = round(25 / 255, 6)
  rows = {m.precision: _run(m, config) for m in (fp, honest, masked)}
  for precision, r in rows.items():
    for noise in ('fgsm', 'pgd_linf'):
      m = r[(noise, eps)]
      assert m['n'] == N and 0 <= m['accuracy'] <= 1
  f, h, k = (rows[p][('pgd_linf', eps)] for p in ('fp32', 'a4', 'a4-masked'))
  assert 'accuracy_transfer' not in f and f['zero_grad_fraction'] == 0
  assert not f['masking_flag']
  assert 'accuracy_transfer' in h and 'accuracy_int8' in h
  assert h['accuracy_int8'] == h['accuracy']   # serve == apply here
  assert k['zero_grad_fraction'] == 1.0
  assert k['accuracy'] > k['accuracy_transfer'] + 0.1 and k['masking_flag']
  assert k['accuracy'] > h['accuracy']


def test_zero_gradient_checked_once_per_model_and_subset():
  """The check sees clean images only: computed in a model's first cell,
  reused in the others, never carried over to another model."""
  config = _config(attacks=('fgsm', 'pgd_linf'), linf_eps_255=(10.0, 25.0))
  fp, honest, masked = _models()
  suite = suites.get_suite('adversarial')  # One instance: its cache kept.
  for model, want in ((fp, 0.0), (masked, 1.0), (honest, 0.0)):
    rows = _run(model, config, suite)
    assert len(rows) == 4
    assert {m['zero_grad_fraction'] for m in rows.values()} == {want}


@pytest.fixture(name='map_calls')
def _map_calls(monkeypatch):
  """A list that grows by one at every `Evaluator.map` call (crafting)."""
  calls = []
  real_map = Evaluator.map

  def counting_map(self, *args, **kwargs):
    calls.append(1)
    return real_map(self, *args, **kwargs)

  monkeypatch.setattr(Evaluator, 'map', counting_map)
  return calls


def test_transfer_crafted_once_and_equal_to_in_program(monkeypatch,
                                                       map_calls):
  """The float model's adversarials are crafted once per cell for all
  quantized models (`suites.transfer_cache`) and score like the attack
  crafted inside each model's program. Tolerance: one example (two compiled
  programs may round differently)."""
  config = _config(attacks=('fgsm', 'pgd_linf'), linf_eps_255=(25.0,))
  _, honest, masked = _models()
  suite = suites.get_suite('adversarial')
  monkeypatch.setattr(suite, '_transfer', transfer_cache.TransferCache())
  kept = {m.precision: _run(m, config, suite) for m in (honest, masked)}
  assert len(map_calls) == 2  # fgsm and pgd_linf, not once per model
  monkeypatch.setattr(suite, '_transfer',
                      transfer_cache.TransferCache(limit_bytes=0))
  inline = {m.precision: _run(m, config, suite) for m in (honest, masked)}
  assert len(map_calls) == 2  # over the limit: crafted in-program
  for precision, rows in kept.items():
    for cell, m in rows.items():
      other = inline[precision][cell]
      assert abs(m['accuracy_transfer'] - other['accuracy_transfer']) <= (
          1 / N + 1e-9), (precision, cell)
      assert m['accuracy'] == other['accuracy']


def test_float_cells_hand_their_adversarials_to_transfer(map_calls):
  """In a run with quantized precisions the float model's white-box cells
  keep their adversarials: no program crafts them again, and the transfer
  rows are those of crafting them apart. Tolerance: one example (two
  compiled programs may round differently)."""
  config = _config(attacks=('fgsm', 'pgd_linf'), linf_eps_255=(25.0,))
  config.precisions = ('fp32', 'a4')
  fp, honest, _ = _models()
  suite = suites.get_suite('adversarial')
  float_rows = _run(fp, config, suite)
  handed = _run(honest, config, suite)
  assert not map_calls
  crafted = _run(honest, config)  # A new suite: crafts them with `map`.
  assert len(map_calls) == 2
  alone = ml_collections.ConfigDict(config.to_dict())
  alone.precisions = ('fp32',)
  assert _run(fp, alone) == float_rows  # Handing over changes no row.
  for cell, m in handed.items():
    other = crafted[cell]
    assert abs(m['accuracy_transfer'] - other['accuracy_transfer']) <= (
        1 / N + 1e-9), cell
    assert m['accuracy'] == other['accuracy']


def test_fgsm_cells_match_attacks_fgsm():
  """FGSM cells run inside the L-inf PGD program (one step of eps from the
  clean image); their accuracy is that of `attacks.fgsm`'s images with clean
  errors counted as errors. Tolerance: one example (the projection may round
  a pixel by one float32 ulp)."""
  config = _config(attacks=('fgsm', 'pgd_linf'), linf_eps_255=(10.0, 25.0))
  fp, _, _ = _models()
  suite = suites.get_suite('adversarial')
  rows = _run(fp, config, suite)
  _, _, x, y = helpers.digits()
  x = np.round(x[:N] * 255).astype(np.uint8).astype(np.float32) / 255
  y = np.asarray(y[:N])
  f = lambda z: fp.apply(fp.variables, z)
  clean_ok = np.argmax(np.asarray(f(x)), -1) == y
  for e in (10.0, 25.0):
    adv = attacks.fgsm(f, jnp.asarray(x), jnp.asarray(y), eps=e / 255)
    ok = clean_ok & (np.argmax(np.asarray(f(adv)), -1) == y)
    got = rows[('fgsm', round(e / 255, 6))]['accuracy']
    assert abs(got - ok.mean()) <= 1 / N + 1e-9, (e, got, ok.mean())
  # No separate FGSM program was built: FGSM cells used the PGD one.
  assert suite._fns and all(k[0] != 'fgsm' for k in suite._fns)


def test_autoattack_and_square_rows_and_summary():
  config = _config(attacks=('pgd_linf', 'autoattack', 'square'),
                   linf_eps_255=(25.0,))
  _, honest, _ = _models()
  suite = suites.get_suite('adversarial')
  ctx = _context(config)
  rows = []
  for cell, m in suite.run(ctx, honest, suite.cells(ctx, honest)):
    rows.append(dict(model='cnn', precision='a4', suite='adversarial',
                     noise=cell.noise, params=dict(cell.params), **m))
  aa = [r for r in rows if r['noise'] == 'autoattack'][0]
  assert aa['n'] == 24
  stages = [aa[f'accuracy_after_{s}']
            for s in ('apgd_ce', 'apgd_t', 'fab_t', 'square')]
  assert all(a >= b for a, b in zip(stages, stages[1:]))
  assert aa['accuracy'] <= stages[0] + 1e-9
  text = adversarial_report.section(rows).markdown()
  assert text.startswith('## Adversarial robustness')
  assert '| cnn | a4 |  | autoattack | 25/255 | 24 |' in text
  # A Square row far below white-box PGD at the same eps gets flagged.
  fake = [dict(model='m', precision='w2', suite='adversarial',
               noise='pgd_linf', params={'eps': 0.1, 'eps_255': 25.5},
               n=10, accuracy=0.8, masking_flag=False),
          dict(model='m', precision='w2', suite='adversarial',
               noise='square', params={'eps': 0.1, 'eps_255': 25.5},
               n=10, accuracy=0.2, masking_flag=False)]
  assert 'Possible gradient masking' in adversarial_report.section(
      fake).markdown()
  assert adversarial_report.section([]) is None


def test_suites_are_per_run_and_release_their_programs():
  """Each `get_suite` call is a new instance (a run owns its suites); after
  `release` the compiled-function cache is empty and, with model_done, the
  kept transfer adversarials too."""
  config = _config(attacks=('fgsm',), linf_eps_255=(25.0,))
  _, honest, _ = _models()
  suite = suites.get_suite('adversarial')
  assert suites.get_suite('adversarial') is not suite
  _run(honest, config, suite)
  assert suite._fns and suite._transfer._kept
  suite.release()
  assert not suite._fns and suite._transfer._kept
  suite.release(model_done=True)
  assert not suite._transfer._kept
