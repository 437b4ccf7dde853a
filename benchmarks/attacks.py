r"""Attack speed, side by side in one run on the CPU.

  python benchmarks/attacks.py            # all four comparisons
  python benchmarks/attacks.py --skip=d   # without the AutoAttack timing

(a) PGD-k wall time / (k x one jitted value-and-grad of the same model and
    batch): the loop's overhead over the physical floor (goal <= 1.1).
(b) Our PGD-20 vs torchattacks' PGD-20, same architecture, batch and weights:
    images/s ratio (goal >= 1.0).
(c) Our PGD-20 vs foolbox 3's LinfPGD on the same JAX function (goal >= 2).
(d) AutoAttack-standard (APGD-CE, APGD-T, FAB-T, Square at the reference
    100 iterations, 9 targets, 5000 queries) on 64 digits with the small CNN
    of the tests: our wall time vs torchattacks' attacks chained the same way.

(a)-(c) use a 3-conv CNN on 32x32x3 inputs with random weights; times are the
median of --repeats runs after a warm-up (compile excluded, reported apart).
PyTorch runs with as many threads as there are cores.
"""

import argparse
import os
import statistics
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from robustmq_jax import attacks  # pylint: disable=g-import-not-at-top
from robustmq_jax.attacks import losses  # pylint: disable=g-import-not-at-top


class CNN(nn.Module):
  """conv3x3(32) - conv3x3/2(64) - conv3x3/2(64) - dense(10), ReLU."""

  @nn.compact
  def __call__(self, x):
    pad = ((1, 1), (1, 1))
    x = nn.relu(nn.Conv(32, (3, 3), padding=pad, name='c1')(x))
    x = nn.relu(nn.Conv(64, (3, 3), strides=2, padding=pad, name='c2')(x))
    x = nn.relu(nn.Conv(64, (3, 3), strides=2, padding=pad, name='c3')(x))
    return nn.Dense(10, name='head')(x.reshape(x.shape[0], -1))


def torch_cnn(params):
  import torch  # pylint: disable=g-import-not-at-top
  p = jax.tree.map(np.asarray, params)['params']

  class Net(torch.nn.Module):

    def __init__(self):
      super().__init__()
      self.c1 = torch.nn.Conv2d(3, 32, 3, padding=1)
      self.c2 = torch.nn.Conv2d(32, 64, 3, stride=2, padding=1)
      self.c3 = torch.nn.Conv2d(64, 64, 3, stride=2, padding=1)
      self.head = torch.nn.Linear(8 * 8 * 64, 10)

    def forward(self, x):
      x = torch.relu(self.c1(x))
      x = torch.relu(self.c2(x))
      x = torch.relu(self.c3(x))
      return self.head(x.permute(0, 2, 3, 1).flatten(1))

  net = Net()
  with torch.no_grad():
    for name in ('c1', 'c2', 'c3'):
      conv = getattr(net, name)
      conv.weight.copy_(torch.from_numpy(
          p[name]['kernel'].transpose(3, 2, 0, 1).copy()))
      conv.bias.copy_(torch.from_numpy(p[name]['bias'].copy()))
    net.head.weight.copy_(torch.from_numpy(p['head']['kernel'].T.copy()))
    net.head.bias.copy_(torch.from_numpy(p['head']['bias'].copy()))
  return net.eval()


def timed(fn, repeats):
  """(median seconds, first-call seconds) of fn() (fn blocks)."""
  t = time.perf_counter()
  fn()
  first = time.perf_counter() - t
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times), first


def bench_pgd(args, rows):
  """Comparisons (a), (b), (c)."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(size=(args.batch, 32, 32, 3)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 10, args.batch), jnp.int32)
  params = CNN().init(jax.random.key(0), x[:1])
  f = lambda z: CNN().apply(params, z)
  eps, k = 8 / 255, args.steps

  vg = jax.jit(lambda z: losses.loss_and_grad(
      f, lambda lg: losses.cross_entropy(lg, y), z)[2])
  pgd = jax.jit(lambda key, z: attacks.pgd(
      key, f, z, y, eps=eps, step_size=eps / 4, steps=k, return_best=False))
  pgd_best = jax.jit(lambda key, z: attacks.pgd(
      key, f, z, y, eps=eps, step_size=eps / 4, steps=k))
  pgd_unrolled = jax.jit(lambda key, z: attacks.pgd(
      key, f, z, y, eps=eps, step_size=eps / 4, steps=k, return_best=False,
      unroll=True))
  key = jax.random.key(1)
  t_vg, c_vg = timed(lambda: vg(x).block_until_ready(), args.repeats)
  t_pgd, c_pgd = timed(lambda: pgd(key, x).block_until_ready(), args.repeats)
  t_best, _ = timed(lambda: pgd_best(key, x).block_until_ready(),
                    args.repeats)
  t_unr, c_unr = timed(lambda: pgd_unrolled(key, x).block_until_ready(),
                       args.repeats)
  rows.append(('a', f'PGD-{k} / ({k} x value_and_grad), last iterate',
               f'{t_pgd / (k * t_vg):.3f}', '<= 1.1',
               f'PGD {t_pgd * 1e3:.1f} ms, v&g {t_vg * 1e3:.2f} ms '
               f'(compile {c_pgd:.1f} s / {c_vg:.1f} s)'))
  rows.append(('a', f'PGD-{k} / ({k} x value_and_grad), default '
               '(keeps first success)', f'{t_best / (k * t_vg):.3f}',
               '<= 1.1', f'PGD {t_best * 1e3:.1f} ms'))
  rows.append(('a', f'PGD-{k} / ({k} x value_and_grad), last iterate, '
               'unroll=True', f'{t_unr / (k * t_vg):.3f}', '<= 1.1',
               f'PGD {t_unr * 1e3:.1f} ms (compile {c_unr:.1f} s)'))
  ours_ips = args.batch / t_pgd

  if 'b' not in args.skip:
    import torch  # pylint: disable=g-import-not-at-top
    import torchattacks  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(os.cpu_count())
    net = torch_cnn(params)
    xt = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())
    yt = torch.from_numpy(np.asarray(y)).long()
    atk = torchattacks.PGD(net, eps=eps, alpha=eps / 4, steps=k,
                           random_start=True)
    t_torch, _ = timed(lambda: atk(xt, yt), args.repeats)
    rows.append(('b', f'PGD-{k} images/s, ours / torchattacks',
                 f'{ours_ips / (args.batch / t_torch):.2f}', '>= 1.0',
                 f'ours {ours_ips:.0f} img/s ({args.batch / t_unr:.0f} '
                 f'unrolled), torchattacks {args.batch / t_torch:.0f} img/s'))

  if 'c' not in args.skip:
    import foolbox as fb  # pylint: disable=g-import-not-at-top
    fmodel = fb.JAXModel(f, bounds=(0, 1))
    fpgd = fb.attacks.LinfPGD(abs_stepsize=eps / 4, steps=k,
                              random_start=True)
    run_fb = lambda: jax.block_until_ready(
        fpgd(fmodel, x, y, epsilons=eps)[1])
    t_fb, _ = timed(run_fb, args.repeats)
    rows.append(('c', f'PGD-{k} images/s, ours / foolbox LinfPGD (JAX)',
                 f'{t_fb / t_pgd:.2f}', '>= 2',
                 f'foolbox {args.batch / t_fb:.0f} img/s; unrolled ours: '
                 f'{t_fb / t_unr:.2f}'))


def bench_autoattack(args, rows):
  """Comparison (d): AutoAttack-standard on 64 digits."""
  import torch  # pylint: disable=g-import-not-at-top
  import torchattacks  # pylint: disable=g-import-not-at-top
  from robustmq_jax.testing import digits_cnn as helpers  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count())
  f = helpers.logits_fn()
  net = helpers.torch_twin()
  _, _, x, y = helpers.digits()
  x, y = jnp.asarray(x[:64]), jnp.asarray(y[:64])
  eps = 0.08
  aa = jax.jit(lambda key, z, t: attacks.autoattack(
      key, f, z, t, eps=eps, steps=100, n_target_classes=9, n_queries=5000))
  t = time.perf_counter()
  compiled = aa.lower(jax.random.key(0), x, y).compile()
  t_compile = time.perf_counter() - t
  t = time.perf_counter()
  adv = compiled(jax.random.key(0), x, y).block_until_ready()
  t_ours = time.perf_counter() - t
  acc_ours = helpers.accuracy(f, adv, np.asarray(y))
  chain = torchattacks.MultiAttack([
      torchattacks.APGD(net, eps=eps, steps=100, loss='ce', n_restarts=1),
      torchattacks.APGDT(net, eps=eps, steps=100, n_classes=10, n_restarts=1),
      torchattacks.FAB(net, eps=eps, steps=100, multi_targeted=True,
                       n_classes=10, n_restarts=1),
      torchattacks.Square(net, eps=eps, n_queries=5000, n_restarts=1)])
  xt = helpers.to_nchw(x)
  yt = torch.from_numpy(np.asarray(y)).long()
  t = time.perf_counter()
  adv_t = chain(xt, yt)
  t_torch = time.perf_counter() - t
  with torch.no_grad():
    acc_torch = float(np.mean(net(adv_t).argmax(1).numpy() == np.asarray(y)))
  rows.append(('d', 'AutoAttack-standard, 64 digits: torchattacks / ours '
               'wall time', f'{t_torch / t_ours:.2f}', '(report)',
               f'ours {t_ours:.1f} s (+{t_compile:.1f} s compile), robust '
               f'{acc_ours:.3f}; torchattacks {t_torch:.1f} s, robust '
               f'{acc_torch:.3f}'))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--skip', default='', help="letters to skip, e.g. 'd'")
  args = parser.parse_args()
  print(f'jax {jax.__version__} on {jax.devices()[0].platform}, '
        f'{os.cpu_count()} cores; batch {args.batch}, {args.steps} steps')
  rows = []
  bench_pgd(args, rows)
  if 'd' not in args.skip:
    bench_autoattack(args, rows)
  print('| | comparison | ratio | goal | detail |')
  print('|---|---|---|---|---|')
  for r in rows:
    print('| ' + ' | '.join(r) + ' |')


if __name__ == '__main__':
  main()
