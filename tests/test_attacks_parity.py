"""Reference comparisons: robustmq_jax.attacks vs torchattacks 3.5.1.

The same CNN runs in Flax and in PyTorch with shared weights
(`robustmq_jax.testing.digits_cnn`); both libraries attack the 797 held-out digits (500
for the multi-run attacks) at the same budget, at epsilons where roughly half
of the images survive PGD. Tolerances: FGSM images equal up to float
rounding (pixels may differ only where the gradient is below 5 % of its
median size, where the two frameworks' different float32 summation orders
can flip its sign: measured 0.13 % of pixels, all below 3.4 %; at most
0.5 % of pixels allowed); robust accuracies within 2 percentage points. The
original AutoAttack (fra31/auto-attack) is not on the package index and is
not compared here; torchattacks' AutoAttack runs APGD and FAB with 10 steps.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustmq_jax import attacks
from robustmq_jax.testing import digits_cnn as helpers

torch = pytest.importorskip('torch')
torchattacks = pytest.importorskip('torchattacks')

EPS_LINF = 0.1
EPS_L2 = 1.0
TOLERANCE = 0.02          # 2 percentage points of robust accuracy.


@functools.lru_cache(maxsize=None)
def setup():
  torch.set_num_threads(2)
  torch.manual_seed(0)
  f = helpers.logits_fn()
  net = helpers.torch_twin()
  _, _, x, y = helpers.digits()
  return f, net, jnp.asarray(x), jnp.asarray(y)


def ours_accuracy(x_adv):
  f, _, _, y = setup()
  return helpers.accuracy(f, x_adv, np.asarray(y)[:len(x_adv)])


def theirs_accuracy(attack, n=None) -> float:
  _, net, x, y = setup()
  x, y = x[:n], y[:n]
  labels = torch.from_numpy(np.asarray(y)).long()
  adv = attack(helpers.to_nchw(x), labels)
  with torch.no_grad():
    pred = net(adv).argmax(1).numpy()
  return float(np.mean(pred == np.asarray(y)))


def test_twin_models_agree():
  f, net, x, y = setup()
  with torch.no_grad():
    theirs = net(helpers.to_nchw(x)).numpy()
  np.testing.assert_allclose(np.asarray(f(x)), theirs, atol=1e-4)
  assert len(y) >= 500 and ours_accuracy(x) > 0.9


def test_fgsm_images_equal_torchattacks():
  f, net, x, y = setup()
  ours = np.asarray(attacks.fgsm(f, x, y, eps=EPS_LINF))
  labels = torch.from_numpy(np.asarray(y)).long()
  theirs = helpers.to_nhwc(torchattacks.FGSM(net, eps=EPS_LINF)(
      helpers.to_nchw(x), labels))
  differ = np.abs(ours - theirs) > 1e-6
  assert differ.mean() < 5e-3, differ.mean()
  # Where they differ, torch's own gradient is at rounding level.
  xt = helpers.to_nchw(x).requires_grad_(True)
  loss = torch.nn.functional.cross_entropy(net(xt), labels, reduction='sum')
  grad = np.abs(helpers.to_nhwc(torch.autograd.grad(loss, xt)[0]))
  assert np.all(grad[differ] < 0.05 * np.median(grad[grad > 0]))
  assert abs(ours_accuracy(ours) - float(np.mean(
      np.argmax(np.asarray(f(theirs)), -1) == np.asarray(y)))) <= 0.005


def test_pgd_linf_matches_torchattacks():
  f, net, x, y = setup()
  ours = ours_accuracy(attacks.pgd(
      jax.random.key(0), f, x, y, eps=EPS_LINF, step_size=EPS_LINF / 4,
      steps=20))
  theirs = theirs_accuracy(torchattacks.PGD(
      net, eps=EPS_LINF, alpha=EPS_LINF / 4, steps=20, random_start=True))
  assert 0.25 < theirs < 0.75, 'eps no longer leaves about half robust'
  assert abs(ours - theirs) <= TOLERANCE, (ours, theirs)


def test_pgd_l2_matches_torchattacks():
  f, net, x, y = setup()
  ours = ours_accuracy(attacks.pgd(
      jax.random.key(0), f, x, y, eps=EPS_L2, step_size=EPS_L2 / 4,
      steps=20, norm='l2'))
  theirs = theirs_accuracy(torchattacks.PGDL2(
      net, eps=EPS_L2, alpha=EPS_L2 / 4, steps=20, random_start=True))
  assert 0.25 < theirs < 0.75, 'eps no longer leaves about half robust'
  assert abs(ours - theirs) <= TOLERANCE, (ours, theirs)


def test_apgd_ce_matches_torchattacks():
  f, net, x, y = setup()
  ours = ours_accuracy(jax.jit(lambda k, x, y: attacks.apgd_ce(
      k, f, x, y, eps=EPS_LINF, steps=50))(jax.random.key(0), x, y))
  theirs = theirs_accuracy(torchattacks.APGD(
      net, eps=EPS_LINF, steps=50, loss='ce', n_restarts=1))
  assert abs(ours - theirs) <= TOLERANCE, (ours, theirs)


@pytest.mark.slow
def test_apgd_ce_l2_matches_torchattacks():
  f, net, x, y = setup()
  ours = ours_accuracy(jax.jit(lambda k, x, y: attacks.apgd_ce(
      k, f, x, y, eps=EPS_L2, steps=100, norm='l2'))(jax.random.key(0), x, y))
  theirs = theirs_accuracy(torchattacks.APGD(
      net, norm='L2', eps=EPS_L2, steps=100, loss='ce', n_restarts=1))
  assert abs(ours - theirs) <= TOLERANCE, (ours, theirs)


def test_apgd_t_matches_torchattacks():
  """3 targets (torchattacks uses n_classes - 1 of them), 500 images."""
  f, net, x, y = setup()
  n = 500
  ours = ours_accuracy(jax.jit(lambda k, x, y: attacks.apgd_t(
      k, f, x, y, eps=EPS_LINF, steps=25, n_target_classes=3))(
          jax.random.key(0), x[:n], y[:n]))
  theirs = theirs_accuracy(torchattacks.APGDT(
      net, eps=EPS_LINF, steps=25, n_classes=4, n_restarts=1), n)
  assert abs(ours - theirs) <= TOLERANCE, (ours, theirs)


def test_square_linf_matches_torchattacks():
  """300 queries (the schedule is rescaled to the budget), 500 images."""
  f, net, x, y = setup()
  n = 500
  ours = ours_accuracy(jax.jit(lambda k, x, y: attacks.square(
      k, f, x, y, eps=EPS_LINF, n_queries=300))(jax.random.key(0), x[:n],
                                                y[:n]))
  theirs = theirs_accuracy(torchattacks.Square(
      net, eps=EPS_LINF, n_queries=300, n_restarts=1), n)
  assert abs(ours - theirs) <= TOLERANCE, (ours, theirs)


@pytest.mark.slow
def test_square_l2_matches_torchattacks():
  f, net, x, y = setup()
  ours = ours_accuracy(jax.jit(lambda k, x, y: attacks.square(
      k, f, x, y, eps=EPS_L2, n_queries=1000, norm='l2'))(
          jax.random.key(0), x, y))
  theirs = theirs_accuracy(torchattacks.Square(
      net, norm='L2', eps=EPS_L2, n_queries=1000, n_restarts=1))
  assert abs(ours - theirs) <= TOLERANCE, (ours, theirs)


@pytest.mark.slow
def test_fab_t_matches_torchattacks():
  f, net, x, y = setup()
  ours = ours_accuracy(jax.jit(lambda k, x, y: attacks.fab_t(
      k, f, x, y, eps=EPS_LINF, steps=50, n_target_classes=9))(
          jax.random.key(0), x, y))
  theirs = theirs_accuracy(torchattacks.FAB(
      net, eps=EPS_LINF, steps=50, multi_targeted=True, n_classes=10,
      n_restarts=1))
  assert abs(ours - theirs) <= TOLERANCE, (ours, theirs)


@pytest.mark.slow
def test_autoattack_matches_torchattacks():
  """torchattacks' AutoAttack runs APGD/FAB with its default 10 steps."""
  f, net, x, y = setup()
  ours = ours_accuracy(jax.jit(lambda k, x, y: attacks.autoattack(
      k, f, x, y, eps=EPS_LINF, steps=10, n_target_classes=9,
      n_queries=5000))(jax.random.key(0), x, y))
  theirs = theirs_accuracy(torchattacks.AutoAttack(
      net, norm='Linf', eps=EPS_LINF, version='standard', n_classes=10,
      seed=0))
  assert abs(ours - theirs) <= TOLERANCE, (ours, theirs)
