r"""Attack speed, side by side in one run on the CPU.

  python benchmarks/attacks.py              # all four comparisons
  python benchmarks/attacks.py --skip=d     # without the AutoAttack timing
  python benchmarks/attacks.py --variants   # also the loop forms we tried
  python benchmarks/attacks.py --quick      # 3 repeats, no (d): ~1 minute
  python benchmarks/attacks.py --xla_default  # XLA's default CPU kernels

(a) PGD-k wall time / (k x one jitted value-and-grad of the same model and
    batch): the loop's overhead over the physical floor (goal <= 1.1). The
    first row is the default path: the adversarial suite's program (step
    count and random start traced, first success kept). Also APGD-CE-k.
(b) Our PGD-20 vs torchattacks' PGD-20, same architecture, batch and weights:
    images/s ratio (goal >= 1.0).
(c) Our default PGD-20 vs foolbox 3's LinfPGD on the same JAX function
    (goal >= 2).
(d) AutoAttack-standard (APGD-CE, APGD-T, FAB-T, Square at the reference
    100 iterations, 9 targets, 5000 queries) on 64 digits with the small CNN
    of the tests: our wall time vs torchattacks' attacks chained the same way.

(a)-(c) use a 3-conv CNN on 32x32x3 inputs with random weights. Every JAX
program of the script runs on the XLA:CPU kernels the main job picks for a
32x32 convolutional twin (Eigen convolutions, `jax_setup.cpu_kernels`;
`--xla_default` keeps XLA's; a value already in XLA_FLAGS wins). The
contenders of (a) and (c) run in turns, one call each per round, for
--repeats rounds after a warm-up (compile excluded, reported apart), so a
shared machine whose speed drifts slows them alike; times are the medians.
`--variants` adds the step-loop forms tried for XLA:CPU: the loop without
`conv_layout` (the previous default), partial unrolling, full unrolling and
chunks of steps driven from Python. PyTorch runs with as many threads as
there are cores. A competitor that is not installed is skipped with a line.
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
from robustmq_jax import jax_setup  # pylint: disable=g-import-not-at-top
from robustmq_jax import models  # pylint: disable=g-import-not-at-top
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


def in_turns(fns, repeats):
  """{name: (median seconds, first-call seconds)}, the fns run in turns."""
  first, times = {}, {name: [] for name in fns}
  for name, fn in fns.items():
    t = time.perf_counter()
    fn()
    first[name] = time.perf_counter() - t
  for _ in range(repeats):
    for name, fn in fns.items():
      t = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t)
  return {name: (statistics.median(times[name]), first[name]) for name in fns}


def missing(rows, letter, what, module):
  """Appends a 'skipped' row when `module` cannot be imported."""
  try:
    __import__(module)
    return False
  except ImportError:
    rows.append((letter, what, 'skipped', '', f'{module} is not installed'))
    return True


def chunked_pgd(f, y, eps, k, chunk):
  """PGD (last iterate) as k / chunk calls of a jitted chunk of steps."""
  step = eps / 4

  @jax.jit
  def start(key, x):
    delta = jax.random.uniform(key, x.shape, x.dtype, -eps, eps)
    return jnp.clip(x + delta, 0.0, 1.0)

  @jax.jit
  def run(x_adv, x):
    for _ in range(chunk):
      _, _, g = losses.loss_and_grad(
          f, lambda lg: losses.cross_entropy(lg, y), x_adv)
      x_adv = jnp.clip(jnp.clip(x_adv + step * jnp.sign(g), x - eps, x + eps),
                       0.0, 1.0)
    return x_adv

  def attack(key, x):
    x_adv = start(key, x)
    for _ in range(k // chunk):
      x_adv = run(x_adv, x)
    return x_adv

  return attack


def bench_pgd(args, rows):
  """Comparisons (a), (b), (c)."""
  from unittest import mock  # pylint: disable=g-import-not-at-top
  from robustmq_jax.xla_cpu import conv_layout  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(size=(args.batch, 32, 32, 3)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 10, args.batch), jnp.int32)
  params = CNN().init(jax.random.key(0), x[:1])
  f = lambda z: CNN().apply(params, z)
  eps, k = 8 / 255, args.steps
  key = jax.random.key(1)
  keys = jax.random.split(key, args.batch)  # per example, as the suite

  vg = jax.jit(lambda z: losses.loss_and_grad(
      f, lambda lg: losses.cross_entropy(lg, y), z)[2])
  # The adversarial suite's PGD program (suites/adversarial.py `_attack`):
  # eps, step size, step count and random start are traced values.
  suite_pgd = jax.jit(lambda kk, z, e, a, n, r: attacks.pgd(
      kk, f, z, y, eps=e, step_size=a, steps=n, random_start=r))
  suite_args = (keys, x, jnp.float32(eps), jnp.float32(eps / 4),
                jnp.int32(k), jnp.bool_(True))

  def pgd(**kw):
    return jax.jit(lambda kk, z: attacks.pgd(
        kk, f, z, y, eps=eps, step_size=eps / 4, steps=k, **kw))

  block = lambda fn, *a: (lambda: jax.block_until_ready(fn(*a)))
  contenders = {
      'vg': block(vg, x),
      'default': block(suite_pgd, *suite_args),
      'last': block(pgd(return_best=False), key, x),
      'apgd': block(jax.jit(lambda kk, z: attacks.apgd_ce(
          kk, f, z, y, eps=eps, steps=k)), key, x),
  }
  labels = {
      'default': (f'PGD-{k} / ({k} x value_and_grad), default path (the '
                  "suite's program: traced steps, keeps first success)"),
      'last': f'PGD-{k} / ({k} x value_and_grad), static steps, last iterate',
      'apgd': f'APGD-CE-{k} / ({k} x value_and_grad)',
  }
  compile_s = {}
  if args.variants:
    with mock.patch.object(conv_layout, 'wanted', lambda: False):
      for u in (1, 2, 4, True):
        name = f'plain_u{u}'
        fn = pgd(return_best=False, unroll=u)
        contenders[name] = block(fn, key, x)
        t0 = time.perf_counter()
        contenders[name]()  # Traced (and compiled) under the patch.
        compile_s[name] = time.perf_counter() - t0
        labels[name] = (f'PGD-{k}, last iterate, without conv_layout, '
                        f'unroll={u}')
    contenders['unrolled'] = block(pgd(return_best=False, unroll=True), key,
                                   x)
    labels['unrolled'] = f'PGD-{k}, last iterate, unroll=True'
    for chunk in (5, k):
      name = f'chunk{chunk}'
      contenders[name] = block(chunked_pgd(f, y, eps, k, chunk), key, x)
      labels[name] = (f'PGD-{k}, last iterate, {k // chunk} Python calls of '
                      f'a jitted {chunk}-step chunk')
  fb_attack = None
  if 'c' not in args.skip and not missing(
      rows, 'c', f'PGD-{k} images/s, ours / foolbox LinfPGD (JAX)',
      'foolbox'):
    import foolbox as fb  # pylint: disable=g-import-not-at-top
    fmodel = fb.JAXModel(f, bounds=(0, 1))
    fb_attack = fb.attacks.LinfPGD(abs_stepsize=eps / 4, steps=k,
                                   random_start=True)
    contenders['foolbox'] = lambda: jax.block_until_ready(
        fb_attack(fmodel, x, y, epsilons=eps)[1])
  t = in_turns(contenders, args.repeats)
  t_vg = t['vg'][0]
  for name, label in labels.items():
    sec, first = t[name]
    first = compile_s.get(name, first)
    rows.append(('a', label, f'{sec / (k * t_vg):.3f}', '<= 1.1',
                 f'{sec * 1e3:.1f} ms, v&g {t_vg * 1e3:.2f} ms (first call '
                 f'{first:.1f} s / {t["vg"][1]:.1f} s)'))
  t_pgd = t['default'][0]
  if fb_attack is not None:
    t_fb = t['foolbox'][0]
    rows.append(('c', f'PGD-{k} images/s, ours (default path) / foolbox '
                 'LinfPGD (JAX)', f'{t_fb / t_pgd:.2f}', '>= 2',
                 f'ours {args.batch / t_pgd:.0f} img/s, foolbox '
                 f'{args.batch / t_fb:.0f} img/s; foolbox / {k} v&g = '
                 f'{t_fb / (k * t_vg):.2f}'))

  if 'b' not in args.skip and not missing(
      rows, 'b', f'PGD-{k} images/s, ours / torchattacks', 'torchattacks'):
    import torch  # pylint: disable=g-import-not-at-top
    import torchattacks  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(os.cpu_count())
    # On a GPU host both run on the GPU (JAX takes it by default).
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    net = torch_cnn(params).to(device)
    xt = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy()).to(
        device)
    yt = torch.from_numpy(np.asarray(y)).long().to(device)
    atk = torchattacks.PGD(net, eps=eps, alpha=eps / 4, steps=k,
                           random_start=True)

    def torch_pgd():
      atk(xt, yt)
      if device == 'cuda':
        torch.cuda.synchronize()  # CUDA calls return before they finish.

    tt = in_turns({'torch': torch_pgd, 'ours': contenders['default']},
                  args.repeats)
    ours_ips = args.batch / tt['ours'][0]
    torch_ips = args.batch / tt['torch'][0]
    rows.append(('b', f'PGD-{k} images/s, ours (default path) / '
                 'torchattacks', f'{ours_ips / torch_ips:.2f}', '>= 1.0',
                 f'ours {ours_ips:.0f} img/s on {jax.default_backend()}, '
                 f'torchattacks {torch_ips:.0f} img/s on {device}'))


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


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--skip', default='', help="letters to skip, e.g. 'd'")
  parser.add_argument('--variants', action='store_true',
                      help='also time the step-loop forms we tried')
  parser.add_argument('--quick', action='store_true',
                      help='3 repeats and no AutoAttack timing (d)')
  parser.add_argument('--xla_default', action='store_true',
                      help="XLA's default CPU kernels instead of those the "
                      'main job picks for a 32x32 convolutional twin')
  args = parser.parse_args(argv)
  # The JAX programs here are small CNNs at 32x32: run them on the kernels
  # the main job would pick for one (Eigen convolutions on a CPU), set
  # before JAX starts. Every JAX contender and the floor share the setting;
  # PyTorch is unaffected.
  if not args.xla_default:
    jax_setup.select_cpu_kernels([models.model_info('resnet20_cifar')])
  if args.quick:
    args.repeats = min(args.repeats, 3)
    args.skip += 'd'
  print(f'jax {jax.__version__} on {jax.devices()[0].platform}, '
        f'{os.cpu_count()} cores; batch {args.batch}, {args.steps} steps; '
        f'load average {os.getloadavg()[0]:.1f}; XLA_FLAGS '
        f"{os.environ.get('XLA_FLAGS') or '(none)'}")
  rows = []
  bench_pgd(args, rows)
  if 'd' not in args.skip and not missing(
      rows, 'd', 'AutoAttack-standard, torchattacks / ours', 'torchattacks'):
    bench_autoattack(args, rows)
  print('| | comparison | ratio | goal | detail |')
  print('|---|---|---|---|---|')
  for r in rows:
    print('| ' + ' | '.join(r) + ' |')
  return rows


if __name__ == '__main__':
  main()
