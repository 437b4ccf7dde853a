"""defenses.build: the penalty reaches QAT; every method end to end (slow)."""

import jax
import ml_collections
import numpy as np
import pytest

from robustmq_jax import models
from robustmq_jax import quant
from robustmq_jax import training
from robustmq_jax.defenses import build as build_lib
from robustmq_jax.defenses import settings
from robustmq_jax.evaluation import make_mesh
from robustmq_jax.quant import qat


def test_penalty_reaches_the_fit_that_qat_calls(monkeypatch):
  seen = {}

  def fake_fit(*args, penalty=None, **kwargs):
    seen['penalty'] = penalty
    return 'trained'

  def fake_qat(*args, **kwargs):
    # Whatever QAT does, it trains through training.fit.
    return training.fit(*args, **{k: v for k, v in kwargs.items()
                                  if k != 'penalty'})

  monkeypatch.setattr(training, 'fit', fake_fit)
  monkeypatch.setattr(qat, 'quantization_aware_training', fake_qat)
  penalty = lambda params: 0.0
  assert build_lib._fit_with_penalty(penalty)('m', 'v') == 'trained'  # pylint: disable=protected-access
  assert seen['penalty'] is penalty
  assert training.fit is fake_fit  # restored


def _request(precision, qconfig, cache_dir):
  kw = dict(stage_sizes=(1, 1), widths=(4, 8))
  module = models.get_model('resnet20_cifar', num_classes=10, **kw)
  shapes = jax.eval_shape(module.init, jax.random.key(0),
                          np.zeros((1, 32, 32, 3), np.float32))
  rng = np.random.default_rng(0)
  fv = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32)
                    * 0.3, shapes)
  fv['batch_stats'] = jax.tree.map(np.abs, fv['batch_stats'])
  images = rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
  labels = rng.integers(0, 10, 32)
  return quant.QuantRequest('resnet20_cifar', kw, 10, fv, precision, qconfig,
                            lambda: (images, labels), cache_dir, make_mesh(),
                            0)


@pytest.mark.slow
def test_every_method_builds_and_is_cached(tmp_path):
  q = quant.default_config('sample')
  q.update(dict(checkpoint_dir='', eval_int8=False, num_calib_batches=2,
                calib_batch_size=8))
  q.qat.update(dict(steps=2, batch_size=8, warmup_steps=1))
  q.update(settings.default_config())
  q.adv.update(dict(train_steps=2, batch_size=8, steps=1, warmup_steps=1))
  q.laaq.update(dict(num_batches=2, batch_size=8, w_fracs=(1.0, 0.7),
                     a_fracs=(1.0, 0.5), iters=5))
  x = np.full((2, 32, 32, 3), 0.5, np.float32)
  outputs = {}
  for precision in ('fp32:adv', 'w4a4:adv_ptq', 'w4a4:laaq', 'w4a4:dq'):
    fields = build_lib.build(_request(precision, q, str(tmp_path)))
    assert fields['method'] == settings.split_precision(precision)[1]
    outputs[precision] = np.asarray(jax.jit(fields['apply'])(
        fields['variables'], x))
    assert outputs[precision].shape == (2, 10)
  # A second build loads every result from the cache (no training).
  calls = []
  orig = build_lib.adversarial_training.adversarial_finetune
  build_lib.adversarial_training.adversarial_finetune = (
      lambda *a, **k: calls.append(1) or orig(*a, **k))
  try:
    for precision in ('w4a4:laaq', 'w4a4:dq'):
      fields = build_lib.build(_request(precision, q, str(tmp_path)))
      np.testing.assert_allclose(np.asarray(jax.jit(fields['apply'])(
          fields['variables'], x)), outputs[precision], rtol=1e-6)
  finally:
    build_lib.adversarial_training.adversarial_finetune = orig
  assert not calls
  # Changing a defense setting rebuilds.
  q.dq.beta = 6e-4
  before = len(list((tmp_path / 'resnet20_cifar').iterdir()))
  build_lib.build(_request('w4a4:dq', q, str(tmp_path)))
  assert len(list((tmp_path / 'resnet20_cifar').iterdir())) == before + 1
