"""The amplification suite and the defense settings, hermetic and small."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from robustmq_jax import models
from robustmq_jax import suites
from robustmq_jax.defenses import settings
from robustmq_jax.errors import UserError
from robustmq_jax.evaluation import Evaluator
from robustmq_jax.evaluation import make_mesh
from robustmq_jax.reporting import amplification as amplification_report
from robustmq_jax.suites import amplification
from tests import fakes

SIZE = 8


def _models():
  module = models.get_model('resnet20_cifar', num_classes=10,
                            stage_sizes=(1, 1), widths=(4, 8))
  shapes = jax.eval_shape(module.init, jax.random.key(0),
                          jnp.zeros((1, SIZE, SIZE, 3)))
  rng = np.random.default_rng(0)
  v = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) * 0.3,
                                         s.dtype), shapes)
  v['batch_stats'] = jax.tree.map(jnp.abs, v['batch_stats'])
  apply = lambda v, x: module.apply(v, x, train=False)
  quantize = lambda x: jnp.round(x * 3) / 3
  ste = lambda x: x + jax.lax.stop_gradient(quantize(x) - x)
  fp = suites.ModelUnderTest(name='tiny', precision='fp32', apply=apply,
                             variables=v, image_size=SIZE)
  q = suites.ModelUnderTest(
      name='tiny', precision='w2a2:dq', apply=lambda v, x: apply(
          v, quantize(x)), grad_apply=lambda v, x: apply(v, ste(x)),
      variables=v, float_model=fp, image_size=SIZE, method='dq')
  return fp, q


def _context():
  c = ml_collections.ConfigDict()
  c.amplification = amplification.default_config(32)
  c.amplification.update(dict(num_examples=12, steps=2))
  rng = np.random.default_rng(1)
  data = fakes.ArrayDataset(
      rng.integers(0, 256, (20, SIZE, SIZE, 3), dtype=np.uint8),
      rng.integers(0, 10, 20))
  return suites.SuiteContext(config=c, dataset=data,
                             evaluator=Evaluator(make_mesh()), batch_size=8,
                             seed=0, cache_dir='/tmp/unused')


def test_amplification_suite_rows_and_summary():
  assert 'amplification' in suites.list_suites()
  ctx = _context()
  suite = suites.get_suite('amplification')
  fp, q = _models()
  rows = []
  for model in (fp, q):
    cells = suite.cells(ctx, model)
    assert [c.noise for c in cells] == [
        'amplification_pgd_float', 'amplification_pgd_self',
        'amplification_random']
    if model is q:
      cells = cells[:1]  # Keep the test small: one cell for the quantized.
    for cell, m in suite.run(ctx, model, cells):
      assert m['n'] == 12 and 0 <= m['accuracy'] <= 1
      assert m['layers'] == ['conv1', 'layer1_0', 'layer2_0', 'fc']
      assert all(np.isfinite(v) and v >= 0 for v in m['gain'].values())
      assert m['gain_logits'] == m['gain']['fc']
      rows.append(dict(m, model=model.name, precision=model.precision,
                       method=model.method, suite='amplification',
                       noise=cell.noise, params=dict(cell.params)))
  by = {(r['precision'], r['noise']): r for r in rows}
  # For the float model, "PGD against the float model" is PGD against
  # itself: the same perturbation, the same gains.
  np.testing.assert_allclose(
      list(by[('fp32', 'amplification_pgd_float')]['gain'].values()),
      list(by[('fp32', 'amplification_pgd_self')]['gain'].values()),
      rtol=1e-5)
  text = amplification_report.section(rows).markdown()
  assert '| w2a2:dq |' in text and 'vs fp32' in text


def test_amplification_config_errors():
  c = ml_collections.ConfigDict({'amplification': {'perturbations': ('x',)}})
  with pytest.raises(UserError, match='config.amplification.perturbations'):
    suites.get_suite('amplification').validate(c)
  c = ml_collections.ConfigDict({'amplification': {'eps': 1}})
  with pytest.raises(UserError, match='config.amplification'):
    suites.get_suite('amplification').validate(c)


@pytest.mark.parametrize('precision,ok', [
    ('w4a4:dq', True), ('w2a2:laaq', True), ('fp32:adv', True),
    ('w4a4:adv_ptq', True), ('w4a4:lsq', True), ('w4a4', True),
    ('w4a4:adv', False), ('fp32:dq', False), ('w4a4:foo', False),
    ('w9a9:dq', False)])
def test_precision_suffixes(precision, ok):
  if ok:
    settings.validate_precision(precision)
  else:
    with pytest.raises(UserError, match='config.precisions'):
      settings.validate_precision(precision)


def test_method_of_and_settings():
  q = ml_collections.ConfigDict({'method': 'lsq'})
  assert settings.method_of('w4a4:dq', q) == 'dq'
  assert settings.method_of('w4a4', q) == 'lsq'
  assert settings.method_of('fp32', q) == 'float'
  q.update(settings.default_config())
  settings.validate_config(q)
  s, nb, bs = settings.laaq_settings(q)
  assert s.w_fracs[0] == 1.0 and nb * bs > 0
  q.dq.beta = -1.0
  with pytest.raises(UserError, match='config.quant.dq.beta'):
    settings.validate_config(q)
  q.dq.beta = 3e-4
  q.laaq.propagation = 'guess'
  with pytest.raises(UserError, match='config.quant.laaq.propagation'):
    settings.validate_config(q)
