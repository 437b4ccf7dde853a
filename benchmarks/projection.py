r"""The paper's grid on ImageNet, projected in device-hours from measured rates.

  JAX_PLATFORMS=cpu python benchmarks/projection.py [--batch=8 --iters=3]

The grid (RobustMQ, arXiv 2308.02350): ResNet-18, ResNet-50, RegNetX-600MF
and MobileNetV2, each in fp32 and with DoReFa, PACT and LSQ at w2a2, w4a4,
w6a6 and w8a8 (52 model rows), under every suite on the 50,000 validation
images: clean; adversarial (FGSM and PGD L-inf at 4 budgets, PGD L2 and L1
at 3, AutoAttack, on the suite's 5,000-image subsets); the 15 ImageNet-C
benchmark corruptions x 5 severities; 3 JPEG decoders x 11 resizes. The
cells are listed the way the main job lists them (`configs/resnet18_w4.py`
with the overrides below, or `--config` as given), and each cell's
passes per image come from `robustmq_jax.grid_shard.passes` (worst case:
every attack step on every image).

Measured here, per model at 224x224 with random-init weights and batch
`--batch` (XLA on this machine's default backend, the median of `--iters`
timed calls after a compile): forward images/s and value-and-grad (input
gradient) images/s of the float model and of its fake-quantized w4a4 twin
(PTQ, BatchNorm folded, the same AQT layers as the QAT models); images/s of
each corruption's generation; host decode (PIL, OpenCV, FFmpeg) and resize
per image of fake-ImageNet JPEGs. Prints the pass counts per suite, a table
of projected hours per suite x model and the total; the projection is
seconds = images x (forwards / forward rate + grads / grad rate) + generation
and host work, summed over cells, plus QAT fine-tuning (config.quant.qat
steps x batch at the quantized value-and-grad rate, an assumption: a
parameter gradient costs about an input gradient).
"""

import collections
import os
import statistics
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

# pylint: disable=g-import-not-at-top
from robustmq_jax import cli
from robustmq_jax import corruptions
from robustmq_jax import grid_shard
from robustmq_jax import jax_setup
from robustmq_jax import models
from robustmq_jax import precision as precision_lib
from robustmq_jax import quant
from robustmq_jax import settings as settings_lib
from robustmq_jax import suites as suites_lib
from robustmq_jax import systematic
from robustmq_jax.data import fake_imagenet
from robustmq_jax.data import preprocess
from robustmq_jax.errors import UserError
from robustmq_jax.models import random_init

_BATCH = flags.DEFINE_integer('batch', 8, 'Images per measured call.')
_ITERS = flags.DEFINE_integer('iters', 3, 'Timed calls per rate (median).')
_MODELS = flags.DEFINE_list(
    'models', ['resnet18', 'resnet50', 'regnetx_600mf', 'mobilenet_v2'],
    'Models of the grid (each measured).')
_CONFIG = flags.DEFINE_string(
    'config', '', 'A config whose grid to project (default: '
    'configs/resnet18_w4.py with the paper-grid overrides below).')
_QUANTIZED = flags.DEFINE_bool(
    'quantized', True, 'Measure the fake-quant twins (else: float rates x '
    'grid_shard.QUANT_FACTOR).')
_SURVIVORS = flags.DEFINE_float(
    'aa_survivors', 0.05, 'Fraction of examples still robust after '
    "AutoAttack's first stage (APGD-CE) for the typical projection: its "
    'later stages (APGD-T, FAB-T, Square) only attack those. An '
    'assumption: models without adversarial training keep about 0-5 percent '
    'at eps 4/255 on ImageNet.')
_DECODERS = flags.DEFINE_list(
    'decoders', ['pil', 'opencv', 'ffmpeg'], "The systematic suite's JPEG "
    'decoders (the paper grid has three; a host without an FFmpeg binary, '
    'e.g. a GPU image without imageio-ffmpeg, projects the other two).')
_VAL_IMAGES = 50_000

PAPER_OVERRIDES = (
    ('precisions', 'fp32,' + ','.join(
        f'{b}:{m}' for m in ('dorefa', 'pact', 'lsq')
        for b in ('w2a2', 'w4a4', 'w6a6', 'w8a8'))),
    ('suites', 'clean,adversarial,corruption,systematic'),
    ('adversarial.attacks', 'fgsm,pgd_linf,pgd_l2,pgd_l1,autoattack'),
    ('corruption.names', 'benchmark'),
    ('corruption.num_examples', '0'),
)


def _timed(fn, *args) -> float:
  """Median seconds of one call of a jitted `fn` (compiled first)."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(_ITERS.value):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _rates(apply, variables, images, labels) -> tuple[float, float]:
  """(forward, input value-and-grad) images/s of `apply`."""
  fwd = jax.jit(lambda v, x: apply(v, x))

  def loss(x, v, y):
    logits = apply(v, x)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits),
                                         y[:, None], 1))

  grad = jax.jit(jax.value_and_grad(loss))
  n = images.shape[0]
  return (n / _timed(fwd, variables, images),
          n / _timed(grad, images, variables, labels))


def measure_model(name: str, batch: int) -> dict[str, float]:
  """Forward / grad images/s of the float model and its w4a4 twin."""
  module = models.get_model(name, num_classes=1000)
  variables = random_init.he_normal_variables(module, 224)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.random((batch, 224, 224, 3), np.float32))
  y = jnp.asarray(rng.integers(0, 1000, batch), jnp.int32)
  out = {}
  apply = lambda v, im: module.apply(v, im, train=False)
  out['fwd_fp32'], out['grad_fp32'] = _rates(apply, variables, x, y)
  if _QUANTIZED.value:
    qc = quant.default_config('robustmq')
    qc.method, qc.num_calib_batches, qc.calib_batch_size = 'ptq', 1, batch
    qc.eval_int8 = False
    spec = quant.parse_spec('w4a4', qc)
    calib = (np.asarray(x) * 255).astype(np.uint8)
    qm = quant.quantize_model(name, 1000, {}, variables, spec, calib,
                              np.asarray(y))
    out['fwd_quant'], out['grad_quant'] = _rates(qm.apply_fn('fake'),
                                                 qm.variables, x, y)
  else:
    out['fwd_quant'] = out['fwd_fp32'] / grid_shard.QUANT_FACTOR
    out['grad_quant'] = out['grad_fp32'] / grid_shard.QUANT_FACTOR
  jax.clear_caches()
  return out


def measure_corruptions(names, batch: int) -> dict[str, float]:
  """Seconds per image of generating each corruption at 224 (severity 3)."""
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.random((batch, 224, 224, 3), np.float32))
  keys = corruptions.keys_for_ids(jax.random.key(0), jnp.arange(batch))
  out = {}
  for name in names:
    fn = jax.jit(lambda k, im, s, name=name: corruptions.apply(
        name, k, im, severity=s))
    out[name] = _timed(fn, keys, images, 3) / batch
    jax.clear_caches()
  return out


def measure_host(decoders) -> dict[str, float]:
  """Seconds per image: decode with each decoder; one host resize + crop."""
  files = [data for _, _, data in fake_imagenet.examples(4, 4, seed=7)]
  out = {}
  for d in decoders:
    start = time.perf_counter()
    for data in files:
      systematic.decode(data, decoder=d)
    out['decode/' + d] = (time.perf_counter() - start) / len(files)
  decoded = [preprocess.decode_rgb(f) for f in files]
  start = time.perf_counter()
  for im in decoded:
    preprocess.resize_crop(im, 224)
  out['resize'] = (time.perf_counter() - start) / len(files)
  return out


def _settings(model_names):
  """The grid's settings; a bad --config, --models or --decoders is one
  sentence on stderr and exit 2, as in the main job."""
  try:
    if _CONFIG.value:
      return settings_lib.load(_CONFIG.value)
    return settings_lib.load('configs/resnet18_w4.py', PAPER_OVERRIDES + (
        ('systematic.decoders', ','.join(_DECODERS.value)),) + tuple(
            ('checkpoints.' + m, '/unused') for m in model_names) + (
                ('models', ','.join(model_names)),))
  except UserError as e:
    cli.fail(str(e))


class _StubDataset:
  name = 'tfds:imagenet2012:validation'
  num_classes = 1000
  image_size = 224
  num_examples = _VAL_IMAGES


def grid_cells(settings):
  """[(model, precision, suite, Cell, n)] of the grid, as the runner lists."""
  ctx = suites_lib.SuiteContext(config=settings.config, dataset=_StubDataset(),
                                evaluator=None, batch_size=settings.batch_size,
                                seed=0, cache_dir='', num_examples=_VAL_IMAGES)
  out = []
  for m in settings.models:
    for p in settings.precisions:
      stub = suites_lib.ModelUnderTest(
          name=m, precision=p, apply=None, variables=None, image_size=224,
          method=precision_lib.method_of(p, settings.config.get('quant')))
      for suite in settings.suite_objects():
        for cell in suite.cells(ctx, stub):
          out.append((m, p, suite.name, cell, cell.n or _VAL_IMAGES))
  return out


def typical_passes(suite, noise, params, *, quantized: bool,
                   survivors: float) -> grid_shard.Passes:
  """`grid_shard.passes`, with AutoAttack's later stages on `survivors`."""
  ps = grid_shard.passes(suite, noise, params, quantized=quantized)
  if suite != 'adversarial' or noise != 'autoattack':
    return ps
  steps, targets = int(params['steps']), int(params.get('targets') or 9)
  score = 2.0 if quantized else 1.0
  return grid_shard.Passes(
      score + survivors * int(params.get('queries') or 0),
      steps * (1 + survivors * 2 * targets))


def project(cells, rates, gen, host, transfer: bool, survivors: float
            ) -> dict[tuple[str, str], float]:
  """Projected seconds per (suite, model) of the grid's cells.

  Each cell: images x (forwards / forward rate + grads / grad rate) at its
  precision's rates, plus corruption generation, host resizes, the host
  decode once per model row and decoder, and for quantized adversarial
  cells the float model's transfer attack once per model and cell.
  """
  seconds = collections.defaultdict(float)
  once = set()
  for m, p, suite, cell, n in cells:
    quantized = not p.startswith('fp32')
    r = rates[m]

    def attack(kind, quantized_):
      ps = typical_passes(suite, cell.noise, cell.params,
                          quantized=quantized_, survivors=survivors)
      return n * (ps.forward / r['fwd_' + kind] + ps.grad / r['grad_' + kind])

    t = attack('quant' if quantized else 'fp32', quantized)
    if suite == 'corruption' and cell.noise != 'none':
      t += n * gen[cell.noise]
    if suite == 'systematic':
      t += n * host['resize']
      key = (m, p, cell.params['decoder'])
      if key not in once:
        once.add(key)
        t += n * host['decode/' + cell.params['decoder']]
    if suite == 'adversarial' and quantized and transfer:
      key = (m, cell.noise, str(sorted(cell.params.items())))
      if key not in once:
        once.add(key)
        t += attack('fp32', False)
    seconds[(suite, m)] += t
  return seconds


def _hours(s: float) -> str:
  return f'{s / 3600:,.1f}'


def main(argv):
  del argv
  # Every rate is measured at 224x224 (even for a twin's name), so the
  # kernels are those the main job picks for a full-size model.
  jax_setup.select_cpu_kernels([models.model_info('resnet18')])
  settings = _settings(_MODELS.value)
  cells = grid_cells(settings)
  batch = _BATCH.value
  print(f'backend {jax.default_backend()}, {jax.device_count()} device(s), '
        f'batch {batch}, load {os.getloadavg()[0]:.2f}', flush=True)
  rates = {}
  for m in settings.models:
    rates[m] = measure_model(m, batch)
    print(f'{m}: ' + ', '.join(f'{k} {v:.1f} img/s'
                               for k, v in rates[m].items()), flush=True)
  names = sorted({c.noise for _, _, s, c, _ in cells
                  if s == 'corruption' and c.noise != 'none'})
  gen = measure_corruptions(names, batch)
  print('corruption generation img/s: ' + ', '.join(
      f'{k} {1 / v:.0f}' for k, v in gen.items()), flush=True)
  # The ImageNet-C grid alone (every validation image x corruption x
  # severity, generated on device), and scoring it once with the first
  # model in float: the one-device figure.
  generate = _VAL_IMAGES * 5 * sum(gen.values())
  score = _VAL_IMAGES * 5 * len(gen) / rates[settings.models[0]]['fwd_fp32']
  print(f'ImageNet-C grid ({_VAL_IMAGES:,} x {len(gen)} x 5) on one device: '
        f'generation {generate / 60:.1f} min, + {settings.models[0]} fp32 '
        f'forward {score / 60:.1f} min = {(generate + score) / 60:.1f} min',
        flush=True)
  decoders = sorted({c.params['decoder'] for _, _, s, c, _ in cells
                     if s == 'systematic'})
  host = measure_host(decoders)
  print('host img/s: ' + ', '.join(f'{k} {1 / v:.0f}'
                                   for k, v in host.items()), flush=True)

  transfer = settings.config.adversarial.get('transfer', True)
  seconds = project(cells, rates, gen, host, transfer, _SURVIVORS.value)
  worst = sum(project(cells, rates, gen, host, transfer, 1.0).values())
  # Pass counts per suite, for one quantized model row.
  first = next(p for p in settings.precisions if not p.startswith('fp32'))
  passes = collections.defaultdict(lambda: [0, 0, 0.0, 0.0])
  for m, p, suite, cell, n in cells:
    if m == settings.models[0] and p == first:
      ps = grid_shard.passes(suite, cell.noise, cell.params, quantized=True)
      row = passes[suite]
      row[0] += 1
      row[1] += n
      row[2] += n * ps.forward
      row[3] += n * ps.grad
  qat = settings.config.quant.get('qat') or {}
  qat_images = int(qat.get('steps', 0)) * int(qat.get('batch_size', 0))
  for m in settings.models:
    n_qat = sum(1 for p in settings.precisions if not p.startswith('fp32'))
    seconds[('QAT fine-tuning', m)] += (n_qat * qat_images /
                                        rates[m]['grad_quant'])

  print(f'\nPasses of one quantized model row ({settings.models[0]} {first};'
        ' image passes summed over its cells, worst case):')
  print('| suite | cells | images | forward passes | value-and-grad passes |')
  print('|---|---|---|---|---|')
  for suite, (k, imgs, fwd, grad) in passes.items():
    print(f'| {suite} | {k} | {imgs:,} | {fwd:,.0f} | {grad:,.0f} |')
  print(f'\nProjected hours on this machine ({jax.default_backend()}, '
        f'{len(settings.models)} models x {len(settings.precisions)} '
        'precisions; AutoAttack after APGD-CE on '
        f'{_SURVIVORS.value:.0%} of its images):')
  suites = sorted({s for s, _ in seconds})
  print('| suite | ' + ' | '.join(settings.models) + ' | total |')
  print('|---|' + '---|' * (len(settings.models) + 1))
  for s in suites:
    row = [seconds[(s, m)] for m in settings.models]
    print(f'| {s} | ' + ' | '.join(_hours(v) for v in row) +
          f' | {_hours(sum(row))} |')
  per_model = [sum(seconds[(s, m)] for s in suites) for m in settings.models]
  print('| total | ' + ' | '.join(_hours(v) for v in per_model) +
        f' | **{_hours(sum(per_model))}** |')
  qat_s = sum(seconds[('QAT fine-tuning', m)] for m in settings.models)
  print(f'worst case (every AutoAttack stage on every image): '
        f'{(worst + qat_s) / 3600:,.0f} hours')
  print(f'total {sum(per_model) / 3600:,.0f} device-hours '
        f'({jax.default_backend()}, {jax.device_count()} device(s))')


if __name__ == '__main__':
  app.run(main)
