"""Error amplification measurement and the PGD adversarial-training hook."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from robustmq_jax import models
from robustmq_jax import training
from robustmq_jax.defenses import adversarial_training
from robustmq_jax.defenses import amplification


class _Linear(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    del train
    h = nn.Dense(5, use_bias=False, name='a')(x.reshape(x.shape[0], -1))
    return nn.Dense(3, use_bias=False, name='b')(nn.relu(h))


def _random_variables(module, shape, seed=0):
  shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros(shape))
  rng = np.random.default_rng(seed)
  v = jax.tree.map(
      lambda s: jnp.asarray(rng.normal(size=s.shape) * 0.3, s.dtype), shapes)
  if 'batch_stats' in v:
    v['batch_stats'] = jax.tree.map(jnp.abs, v['batch_stats'])
  return v


def test_gain_of_a_linear_layer_is_direct_ratio():
  module = _Linear()
  v = _random_variables(module, (1, 2, 2, 1))
  apply = lambda v, x: module.apply(v, x)
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.uniform(0.3, 0.7, (4, 2, 2, 1)), jnp.float32)
  d = jnp.asarray(rng.normal(size=x.shape) * 0.01, jnp.float32)
  _, gains, rel = jax.jit(lambda v, x, d: amplification.amplification(
      apply, v, x, d, granularity='layers'))(v, x, d)
  w = np.asarray(v['params']['a']['kernel'])
  dd = np.asarray(d).reshape(4, -1)
  expect = np.linalg.norm(dd @ w, axis=1) / np.linalg.norm(dd, axis=1)
  np.testing.assert_allclose(gains['a'], expect, rtol=1e-5)
  h = np.asarray(x).reshape(4, -1) @ w
  np.testing.assert_allclose(rel['a'], np.linalg.norm(dd @ w, axis=1) /
                             np.linalg.norm(h, axis=1), rtol=1e-5)
  assert set(gains) == {'a', 'b'}


def test_block_granularity_order_and_names():
  module = models.get_model('resnet20_cifar', num_classes=10,
                            stage_sizes=(2, 1), widths=(4, 8))
  v = _random_variables(module, (1, 8, 8, 3))
  apply = lambda v, x: module.apply(v, x, train=False)
  order = amplification.layer_order(apply, v, (8, 8, 3))
  assert order == ['conv1', 'layer1_0', 'layer1_1', 'layer2_0', 'fc']
  x = jnp.full((2, 8, 8, 3), 0.5)
  logits, gains, _ = jax.jit(lambda v, x, d: amplification.amplification(
      apply, v, x, d))(v, x, jnp.full_like(x, 0.01))
  assert logits.shape == (2, 10)
  assert set(gains) == set(order)
  assert all(np.all(np.isfinite(g)) for g in gains.values())


def test_zero_perturbation_gives_finite_zero_gain():
  module = _Linear()
  v = _random_variables(module, (1, 2, 2, 1))
  x = jnp.zeros((2, 2, 2, 1))
  _, gains, _ = amplification.amplification(
      lambda v, x: module.apply(v, x), v, x, jnp.zeros_like(x))
  assert all(np.all(np.asarray(g) == 0) for g in gains.values())


def test_pgd_perturb_stays_in_ball_and_raises_loss():
  module = _Linear()
  v = _random_variables(module, (1, 2, 2, 1))
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.uniform(0.2, 0.8, (16, 2, 2, 1)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 3, 16), jnp.int32)
  perturb = adversarial_training.pgd_perturb(eps=0.1, step_size=0.05,
                                             steps=5)
  logits_fn = lambda z: module.apply(v, z)
  adv = jax.jit(lambda k, x, y: perturb(k, logits_fn, x, y))(
      jax.random.key(0), x, y)
  assert float(jnp.max(jnp.abs(adv - x))) <= 0.1 + 1e-6
  assert (float(training.cross_entropy(logits_fn(adv), y)) >
          float(training.cross_entropy(logits_fn(x), y)))


def test_pgd_perturb_fraction_keeps_the_rest_clean():
  module = _Linear()
  v = _random_variables(module, (1, 2, 2, 1))
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.uniform(0.2, 0.8, (8, 2, 2, 1)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 3, 8), jnp.int32)
  perturb = adversarial_training.pgd_perturb(eps=0.1, step_size=0.05,
                                             steps=2, fraction=0.25)
  out = perturb(jax.random.key(0), lambda z: module.apply(v, z), x, y)
  np.testing.assert_array_equal(out[:6], x[:6])
  assert float(jnp.max(jnp.abs(out[6:] - x[6:]))) > 0


def test_adversarial_finetune_runs_through_fit():
  module = _Linear()
  v = _random_variables(module, (1, 2, 2, 1))
  rng = np.random.default_rng(3)
  images = rng.integers(0, 256, (32, 2, 2, 1), dtype=np.uint8)
  labels = rng.integers(0, 3, 32)
  settings = adversarial_training.AdvSettings(
      eps=0.05, step_size=0.02, steps=2,
      recipe=training.Recipe(steps=3, batch_size=8, warmup_steps=1,
                             pad_crop=0))
  out, losses = adversarial_training.adversarial_finetune(
      module, v, images, labels, settings, key=jax.random.key(0),
      log_every=0)
  assert len(losses) == 3 and np.all(np.isfinite(losses))
  assert not np.allclose(out['params']['a']['kernel'],
                         v['params']['a']['kernel'])
