"""Properties of the attack library (robustmq_jax.attacks) on a small CNN.

Budgets are tiny (few steps and queries, 48 digits) so the file runs in a
couple of minutes; the reference comparisons live in test_attacks_parity.py.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from robustmq_jax import attacks
from robustmq_jax.attacks import fab_projections
from robustmq_jax.attacks import projections
from robustmq_jax.errors import UserError
from robustmq_jax.testing import digits_cnn as helpers

N = 48
EPS = 0.1


@functools.lru_cache(maxsize=None)
def data():
  _, _, x, y = helpers.digits()
  return jnp.asarray(x[:N]), jnp.asarray(y[:N])


def model():
  return helpers.logits_fn()


def acc(x_adv, y):
  return helpers.accuracy(model(), x_adv, np.asarray(y))


# Every attack, with small budgets: name -> (fn(key, f, x, y, eps), norm).
ATTACKS = {
    'fgsm': (lambda k, f, x, y, e: attacks.fgsm(f, x, y, eps=e), 'linf'),
    'pgd_linf': (lambda k, f, x, y, e: attacks.pgd(
        k, f, x, y, eps=e, step_size=e / 4, steps=5), 'linf'),
    'pgd_l2': (lambda k, f, x, y, e: attacks.pgd(
        k, f, x, y, eps=e, step_size=e / 4, steps=5, norm='l2'), 'l2'),
    'pgd_l1': (lambda k, f, x, y, e: attacks.pgd(
        k, f, x, y, eps=e, step_size=e / 4, steps=5, norm='l1',
        restarts=2), 'l1'),
    'apgd_ce_linf': (lambda k, f, x, y, e: attacks.apgd_ce(
        k, f, x, y, eps=e, steps=10), 'linf'),
    'apgd_ce_l2': (lambda k, f, x, y, e: attacks.apgd_ce(
        k, f, x, y, eps=e, steps=10, norm='l2'), 'l2'),
    'apgd_t': (lambda k, f, x, y, e: attacks.apgd_t(
        k, f, x, y, eps=e, steps=5, n_target_classes=2), 'linf'),
    'fab_t_linf': (lambda k, f, x, y, e: attacks.fab_t(
        k, f, x, y, eps=e, steps=5, n_target_classes=2), 'linf'),
    'fab_t_l2': (lambda k, f, x, y, e: attacks.fab_t(
        k, f, x, y, eps=e, steps=5, n_target_classes=2, norm='l2'), 'l2'),
    'fab_untargeted': (lambda k, f, x, y, e: attacks.fab(
        k, f, x, y, eps=e, steps=3, restarts=2), 'linf'),
    'square_linf': (lambda k, f, x, y, e: attacks.square(
        k, f, x, y, eps=e, n_queries=30), 'linf'),
    'square_l2': (lambda k, f, x, y, e: attacks.square(
        k, f, x, y, eps=e, n_queries=30, norm='l2'), 'l2'),
}
AUTOATTACK = (lambda k, f, x, y, e: attacks.autoattack(
    k, f, x, y, eps=e, steps=4, n_target_classes=2, n_queries=20), 'linf')
EPS_BY_NORM = {'linf': EPS, 'l2': 1.0, 'l1': 8.0}


@pytest.mark.parametrize('name', sorted(ATTACKS))
def test_inside_ball_and_box_and_stronger_than_clean(name):
  attack, norm = ATTACKS[name]
  x, y = data()
  eps = EPS_BY_NORM[norm]
  f = model()
  x_adv = jax.jit(lambda k, x, y: attack(k, f, x, y, eps))(
      jax.random.key(1), x, y)
  assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
  dist = attacks.lp_norm(x_adv - x, norm)
  assert float(dist.max()) <= eps * (1 + 1e-5) + 1e-6, (name, dist.max())
  assert acc(x_adv, y) <= acc(x, y)


def test_dtype_is_preserved():
  x, y = data()
  xb = x.astype(jnp.bfloat16)
  f = lambda z: model()(z.astype(jnp.float32))
  out = attacks.pgd(jax.random.key(0), f, xb, y, eps=EPS, step_size=0.03,
                    steps=1)
  assert out.dtype == jnp.bfloat16 and out.shape == x.shape
  assert attacks.fgsm(f, xb, y, eps=EPS).dtype == jnp.bfloat16


def test_more_steps_never_raise_robust_accuracy():
  x, y = data()
  f = model()
  run = jax.jit(lambda x, y, steps: attacks.pgd(
      jax.random.key(3), f, x, y, eps=0.08, step_size=0.02, steps=steps),
                static_argnums=2)
  accs = [acc(run(x, y, s), y) for s in (0, 2, 6)]
  assert all(a >= b for a, b in zip(accs, accs[1:])), accs
  assert accs[-1] < accs[0]


def test_accuracy_falls_with_eps_under_vmap():
  x, y = data()
  f = model()
  grid = jnp.asarray([0.0, 0.03, 0.06, 0.1, 0.15, 0.25])

  @jax.jit
  def sweep(x, y):
    return jax.vmap(lambda e: attacks.pgd(
        jax.random.key(0), f, x, y, eps=e, step_size=e / 4, steps=5))(grid)

  advs = sweep(x, y)
  accs = [acc(a, y) for a in advs]
  assert all(a >= b for a, b in zip(accs, accs[1:])), accs
  assert accs[0] == acc(x, y) and accs[-1] < 0.1
  # The vmapped sweep equals one call per eps.
  single = attacks.pgd(jax.random.key(0), f, x, y, eps=grid[3],
                       step_size=grid[3] / 4, steps=5)
  np.testing.assert_allclose(advs[3], single, atol=1e-6)


@pytest.mark.parametrize('name', [
    'pgd_linf', 'fab_t_linf',
    pytest.param('apgd_ce_linf', marks=pytest.mark.slow),
    pytest.param('square_linf', marks=pytest.mark.slow)])
def test_jit_equals_eager(name):
  attack, norm = ATTACKS[name]
  x, y = data()
  f = model()
  key = jax.random.key(5)
  eager = attack(key, f, x, y, EPS_BY_NORM[norm])
  jitted = jax.jit(lambda k, x, y: attack(k, f, x, y, EPS_BY_NORM[norm]))(
      key, x, y)
  np.testing.assert_allclose(eager, jitted, atol=1e-5)
  assert acc(eager, y) == acc(jitted, y)


@pytest.mark.parametrize('name', [
    'pgd_linf', 'square_linf',
    pytest.param('apgd_t', marks=pytest.mark.slow),
    pytest.param('autoattack', marks=pytest.mark.slow)])
def test_one_vs_eight_devices(name):
  if jax.device_count() < 8:
    pytest.skip('needs 8 (fake) devices; see tests/conftest.py')
  attack, norm = AUTOATTACK if name == 'autoattack' else ATTACKS[name]
  x, y = data()
  f = model()
  fn = jax.jit(lambda k, x, y: attack(k, f, x, y, EPS_BY_NORM[norm]))
  keys = jax.random.split(jax.random.key(7), N)
  outs = []
  for devices in (jax.devices()[:1], jax.devices()[:8]):
    mesh = Mesh(np.asarray(devices), ('data',))
    shard = NamedSharding(mesh, P('data'))
    outs.append(np.asarray(fn(jax.device_put(keys, shard),
                              jax.device_put(x, shard),
                              jax.device_put(y, shard))))
  np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)
  assert acc(outs[0], y) == acc(outs[1], y)


def test_per_example_keys_make_results_batch_independent():
  x, y = data()
  f = model()
  keys = jax.random.split(jax.random.key(11), N)
  run = lambda k, x, y: attacks.pgd(k, f, x, y, eps=EPS, step_size=0.025,
                                    steps=3)
  full = run(keys, x, y)
  part = run(keys[8:24], x[8:24], y[8:24])
  np.testing.assert_allclose(full[8:24], part, atol=1e-6)


def test_restarts_do_not_weaken_pgd():
  x, y = data()
  f = model()
  one = attacks.pgd(jax.random.key(2), f, x, y, eps=0.07, step_size=0.02,
                    steps=3)
  three = attacks.pgd(jax.random.key(2), f, x, y, eps=0.07, step_size=0.02,
                      steps=3, restarts=3)
  assert acc(three, y) <= acc(one, y)


def test_autoattack_stages_only_remove_points():
  x, y = data()
  f = model()
  adv, stages = jax.jit(lambda k, x, y: attacks.autoattack(
      k, f, x, y, eps=EPS, steps=4, n_target_classes=2, n_queries=20,
      return_stages=True))(jax.random.key(1), x, y)
  assert adv.shape == x.shape and adv.dtype == x.dtype
  assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
  assert float(attacks.lp_norm(adv - x, 'linf').max()) <= EPS + 1e-6
  assert list(stages) == ['apgd-ce', 'apgd-t', 'fab-t', 'square']
  robust = [np.asarray(r) for r in stages.values()]
  for a, b in zip(robust, robust[1:]):
    assert not np.any(b & ~a)
  # The reported robust set is the model's verdict on the returned images.
  np.testing.assert_array_equal(
      robust[-1], np.argmax(np.asarray(f(adv)), -1) == np.asarray(y))


def test_transfer_to_itself_is_white_box():
  x, y = data()
  f = model()
  kw = dict(eps=EPS, step_size=0.025, steps=3)
  res = attacks.transfer(jax.random.key(0), f, f, x, y, attack='pgd', **kw)
  white = attacks.pgd(jax.random.key(0), f, x, y, **kw)
  np.testing.assert_allclose(res.images, white, atol=1e-6)
  np.testing.assert_array_equal(res.source_correct, res.target_correct)
  fg = attacks.transfer(jax.random.key(0), f, f, x, y, attack='fgsm', eps=EPS)
  np.testing.assert_allclose(fg.images, attacks.fgsm(f, x, y, eps=EPS))


def test_masking_checks():
  x, y = data()
  f = model()
  assert not np.any(attacks.zero_gradient(f, x, y))
  blocked = lambda z: f(jax.lax.stop_gradient(z))
  assert np.all(attacks.zero_gradient(blocked, x, y))
  # No gradient: white-box PGD cannot move (apart from its random start).
  adv = attacks.pgd(jax.random.key(0), blocked, x, y, eps=EPS,
                    step_size=0.025, steps=3, random_start=False)
  np.testing.assert_allclose(adv, x)
  assert attacks.masking_flag(0.9, transfer_accuracy=0.5)
  assert attacks.masking_flag(0.9, black_box_accuracy=0.5)
  assert not attacks.masking_flag(0.3, transfer_accuracy=0.5,
                                  black_box_accuracy=0.31)
  cos = attacks.gradient_cosine(f, f, x, y)
  np.testing.assert_allclose(cos, 1.0, atol=1e-5)


def test_bad_arguments_raise_user_errors():
  x, y = data()
  f = model()
  k = jax.random.key(0)
  with pytest.raises(UserError, match='norm'):
    attacks.pgd(k, f, x, y, eps=EPS, step_size=0.1, steps=1, norm='l3')
  with pytest.raises(UserError, match='steps'):
    attacks.pgd(k, f, x, y, eps=EPS, step_size=0.1, steps=-1)
  with pytest.raises(UserError, match='steps'):  # concrete arrays, checked
    attacks.pgd(k, f, x, y, eps=EPS, step_size=0.1, steps=jnp.int32(-1))
  with pytest.raises(UserError, match='steps'):
    attacks.pgd(k, f, x, y, eps=EPS, step_size=0.1, steps=jnp.float32(2))
  with pytest.raises(UserError, match='norm'):
    attacks.apgd_ce(k, f, x, y, eps=EPS, norm='l1')
  with pytest.raises(UserError, match='version'):
    attacks.autoattack(k, f, x, y, eps=EPS, version='rand')
  with pytest.raises(UserError, match='loss'):
    attacks.pgd(k, f, x, y, eps=EPS, step_size=0.1, steps=1, loss='hinge')
  two = lambda z: f(z)[:, :3]
  with pytest.raises(UserError, match='num_classes'):
    attacks.apgd_t(k, two, x, y % 3, eps=EPS, steps=2)


# Projections.


def test_l1_ball_projection_is_euclidean_projection():
  rng = np.random.default_rng(0)
  v = rng.normal(size=(20, 7)).astype(np.float32)
  eps = 1.5
  p = np.asarray(projections.project_ball(jnp.asarray(v), eps, 'l1'))
  assert np.all(np.abs(p).sum(1) <= eps + 1e-5)
  # Optimality: p = sign(v) max(|v| - theta, 0) for one theta per row.
  for vi, pi in zip(v, p):
    if np.abs(vi).sum() <= eps:
      np.testing.assert_allclose(pi, vi, atol=1e-6)
      continue
    moved = np.abs(vi) - np.abs(pi)
    theta = moved[np.abs(pi) > 0]
    np.testing.assert_allclose(theta, theta[0], atol=1e-5)
    assert np.all(np.abs(vi)[np.abs(pi) == 0] <= theta[0] + 1e-5)


@pytest.mark.parametrize('norm', ['linf', 'l2', 'l1'])
def test_fab_projection_is_minimal(norm):
  """Against scipy's constrained solvers on small random instances."""
  scipy_opt = pytest.importorskip('scipy.optimize')
  rng = np.random.default_rng(1)
  d_dim, n = 6, 12
  t = rng.uniform(size=(n, d_dim))
  w = rng.normal(size=(n, d_dim))
  b = (w * rng.uniform(size=(n, d_dim))).sum(1)   # reachable in the box
  d = np.asarray(fab_projections.PROJECTIONS[norm](
      jnp.asarray(t, jnp.float32), jnp.asarray(w, jnp.float32),
      jnp.asarray(b, jnp.float32)))
  np.testing.assert_allclose((w * (t + d)).sum(1), b, atol=1e-4)
  assert np.all(t + d >= -1e-6) and np.all(t + d <= 1 + 1e-6)
  ours = {'linf': np.abs(d).max(1), 'l2': np.sqrt((d * d).sum(1)),
          'l1': np.abs(d).sum(1)}[norm]
  for i in range(n):
    bounds = [(-t[i, j], 1 - t[i, j]) for j in range(d_dim)]
    if norm == 'l2':
      r = scipy_opt.minimize(
          lambda z: (z * z).sum(), np.zeros(d_dim), jac=lambda z: 2 * z,
          bounds=bounds, method='SLSQP', constraints=[{
              'type': 'eq', 'fun': lambda z, i=i: w[i] @ (t[i] + z) - b[i]}],
          options={'ftol': 1e-12, 'maxiter': 500})
      best = np.sqrt(r.fun)
    else:  # LP in (d+, d-, s): min s (linf) or sum(d+ + d-) (l1).
      c = (np.r_[np.zeros(2 * d_dim), 1.0] if norm == 'linf'
           else np.r_[np.ones(2 * d_dim), 0.0])
      a_eq = np.r_[w[i], -w[i], 0.0][None]
      b_eq = [b[i] - w[i] @ t[i]]
      a_ub = b_ub = None
      if norm == 'linf':
        a_ub = np.c_[np.eye(d_dim), np.eye(d_dim), -np.ones(d_dim)]
        b_ub = np.zeros(d_dim)
      lp_bounds = ([(0, 1 - t[i, j]) for j in range(d_dim)] +
                   [(0, t[i, j]) for j in range(d_dim)] + [(0, None)])
      r = scipy_opt.linprog(c, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq,
                            bounds=lp_bounds)
      best = r.fun
    assert ours[i] <= best + 1e-4, (norm, i, ours[i], best)


def test_fab_projection_unreachable_moves_to_the_box_corner():
  t = jnp.asarray([[0.5, 0.5]])
  w = jnp.asarray([[1.0, -1.0]])
  b = jnp.asarray([5.0])                     # w.z <= 1 inside the box.
  for norm, proj in fab_projections.PROJECTIONS.items():
    d = np.asarray(proj(t, w, b))
    np.testing.assert_allclose(t + d, [[1.0, 0.0]], atol=1e-6, err_msg=norm)


# The README example: adversarial training with pgd inside a jitted step.

README_EXAMPLE = '''
import jax, optax
from robustmq_jax import attacks

def train_step(params, opt_state, key, images, labels, *, apply, optimizer):
  logits_fn = lambda x: apply(params, x)
  # Madry et al.: train on the last PGD iterate (return_best=False).
  adv = attacks.pgd(key, logits_fn, images, labels, eps=8 / 255,
                    step_size=2 / 255, steps=7, return_best=False)
  adv = jax.lax.stop_gradient(adv)

  def loss_fn(p):
    logits = apply(p, adv)
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, labels).mean()

  loss, grads = jax.value_and_grad(loss_fn)(params)
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss

train_step = jax.jit(train_step, static_argnames=('apply', 'optimizer'))
'''


def test_readme_adversarial_training_example():
  import optax  # pylint: disable=g-import-not-at-top
  namespace = {}
  exec(README_EXAMPLE, namespace)  # pylint: disable=exec-used
  train_step = namespace['train_step']
  x, y = data()
  module = helpers.DigitsCNN()
  params = module.init(jax.random.key(0), x[:1])
  optimizer = optax.adam(3e-3)
  opt_state = optimizer.init(params)
  losses = []
  for i in range(8):
    params, opt_state, loss = train_step(
        params, opt_state, jax.random.key(i), x, y, apply=module.apply,
        optimizer=optimizer)
    losses.append(float(loss))
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
  assert train_step._cache_size() == 1  # compiled once.  # pylint: disable=protected-access


def test_readme_contains_the_tested_example():
  """The README shows the adversarial-training example, exactly this code."""
  import os  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'README.md')
  with open(path) as f:
    text = f.read()
  assert README_EXAMPLE.strip() in text, (
      'README.md no longer shows the tested adversarial-training example; '
      'update README_EXAMPLE and the README together.')
