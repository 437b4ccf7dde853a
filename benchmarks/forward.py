r"""Forward throughput at 224: our Flax ResNet-18 / ViT-S/16 vs timm (PyTorch).

  python benchmarks/forward.py
  python benchmarks/forward.py --batch_size=32 --repeats=5 \
      --models=resnet18,vit_small_patch16_224 --variants=default,eigen

Both sides run the same architecture with the same (random) weights: the timm
model's state dict is converted with `robustmq_jax.checkpoints.convert`, and
the logits are compared once as a sanity check. float32, eval mode, one batch
of `--batch_size` 224x224 images; PyTorch uses torch.set_num_threads(all
cores). Rounds alternate between all contenders so machine load hits them
alike; the median per contender is reported with the ratio ours / timm
(> 1: we are faster). timm runs in NCHW (its default) and channels_last.

`--variants` compiles our forward with different XLA CPU options (per
compile, via ``.compile(compiler_options=...)``, so one process compares
them): see `_VARIANTS`. `--devices=N` splits the batch over N virtual CPU
devices (data parallel). Needs torch, timm and torchvision (imported with
the CPU shim of robustmq_jax/testing/torch_compat.py).
"""

import os
import statistics
import sys
import time

from absl import app
from absl import flags

_YNN = 'xla_cpu_experimental_ynn_fusion_type'
# XLA CPU (jax 0.10) sends convolutions and dots to YNNPACK by default.
_VARIANTS = {
    'default': {},
    'eigen': {_YNN: ''},  # YNNPACK off: Eigen convolutions and dots.
    'ynn_eltwise': {_YNN: 'LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION,'
                          'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,'
                          'LIBRARY_FUSION_TYPE_ELTWISE'},
    'onednn_dot': {_YNN: '', 'xla_cpu_experimental_onednn_fusion_type':
                   'LIBRARY_FUSION_TYPE_DOT'},
    'xnn_dot': {_YNN: '', 'xla_cpu_experimental_xnn_fusion_type':
                'LIBRARY_FUSION_TYPE_DOT'},
    'fast_math': {'xla_cpu_enable_fast_math': True},
}

_MODELS = flags.DEFINE_list('models', ['resnet18', 'vit_small_patch16_224'],
                            'Architectures (our names = timm names).')
_BATCH = flags.DEFINE_integer('batch_size', 32, 'Images per forward.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed rounds per contender.')
_DEVICES = flags.DEFINE_integer('devices', 1, 'Virtual CPU devices for JAX.')
_VARIANT_NAMES = flags.DEFINE_list(
    'variants', ['default'], 'XLA option sets: ' + ', '.join(_VARIANTS) + '.')

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _seconds(fn) -> float:
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


def main(argv):
  del argv
  for v in _VARIANT_NAMES.value:
    if v not in _VARIANTS:
      raise app.UsageError(f'--variants: unknown {v!r}; allowed: '
                           f'{", ".join(_VARIANTS)}.')
  if _DEVICES.value > 1:  # Must precede the first JAX import.
    os.environ['XLA_FLAGS'] = (
        os.environ.get('XLA_FLAGS', '') +
        f' --xla_force_host_platform_device_count={_DEVICES.value}').strip()
  sys.path.insert(0, _ROOT)
  from robustmq_jax.testing import torch_compat as torch_shims  # pylint: disable=g-import-not-at-top
  torch_shims.patch_register_fake()
  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  import timm
  import torch
  from robustmq_jax import checkpoints
  from robustmq_jax import models
  # pylint: enable=g-import-not-at-top

  threads = os.cpu_count()
  torch.set_num_threads(threads)
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:_DEVICES.value]),
                           ('data',))
  data = jax.NamedSharding(mesh, jax.P('data'))
  replicated = jax.NamedSharding(mesh, jax.P())
  batch = _BATCH.value
  print(f'jax {jax.__version__} ({_DEVICES.value} device(s)), torch '
        f'{torch.__version__} ({threads} threads), timm {timm.__version__}; '
        f'XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}; batch {batch}x224'
        f'x224x3 float32; median of {_REPEATS.value} interleaved rounds')
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(batch, 224, 224, 3)).astype(np.float32)
  for arch in _MODELS.value:
    tmodel = timm.create_model(arch, num_classes=1000).eval()
    name, variables, kwargs = checkpoints.convert(
        'timm', arch, tmodel.state_dict(), mean=models.normalize.IMAGENET_MEAN,
        std=models.normalize.IMAGENET_STD)
    module = models.get_model(name, num_classes=1000, **kwargs)
    variables = jax.device_put(variables, replicated)
    xj = jax.device_put(x, data)
    lowered = jax.jit(module.apply, in_shardings=(replicated, data),
                      out_shardings=data).lower(variables, xj)
    ours, compile_s, logits = {}, {}, {}
    for v in _VARIANT_NAMES.value:
      t0 = time.perf_counter()
      ours[v] = lowered.compile(compiler_options=_VARIANTS[v])
      logits[v] = np.asarray(ours[v](variables, xj))
      compile_s[v] = time.perf_counter() - t0

    mean = torch.tensor(kwargs['mean']).view(1, 3, 1, 1)
    std = torch.tensor(kwargs['std']).view(1, 3, 1, 1)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    xt_cl = xt.contiguous(memory_format=torch.channels_last)
    tmodel_cl = timm.create_model(arch, num_classes=1000).eval()
    tmodel_cl.load_state_dict(tmodel.state_dict())
    tmodel_cl = tmodel_cl.to(memory_format=torch.channels_last)

    def run_torch(model, inp):
      with torch.inference_mode():
        return model((inp - mean) / std)

    ref = run_torch(tmodel, xt).numpy()
    run_torch(tmodel_cl, xt_cl)  # Warm-up.
    contenders = {f'ours[{v}]': (lambda c=c: c(variables, xj)
                                 .block_until_ready())
                  for v, c in ours.items()}
    contenders['timm NCHW'] = lambda: run_torch(tmodel, xt)
    contenders['timm channels_last'] = lambda: run_torch(tmodel_cl, xt_cl)
    times = {k: [] for k in contenders}
    for _ in range(_REPEATS.value):
      for k, fn in contenders.items():
        times[k].append(_seconds(fn))
    ips = {k: batch / statistics.median(t) for k, t in times.items()}
    print(f'\n{arch}')
    for k, rate in ips.items():
      line = f'  {k:22s} {rate:7.1f} img/s'
      if k.startswith('ours'):
        v = k[5:-1]
        err = np.abs(logits[v] - ref).max() / np.abs(ref).max()
        line += (f'  ours/NCHW {rate / ips["timm NCHW"]:.2f}  ours/CL '
                 f'{rate / ips["timm channels_last"]:.2f}  compile '
                 f'{compile_s[v]:.1f}s  logit rel. diff {err:.0e}')
      print(line, flush=True)


if __name__ == '__main__':
  app.run(main)
