"""Process setup done before JAX creates its backends (jax_setup.py)."""

import os
import subprocess
import sys

from robustmq_jax import jax_setup
from robustmq_jax import main
from robustmq_jax import models

_FLAG = jax_setup.YNN_FLAG + '='
_VIT32 = models.model_info('vit_tiny_patch4_32')
_RESNET32 = models.model_info('resnet20_cifar')
_RESNET224 = models.model_info('resnet18')


def _fresh(monkeypatch, xla_flags=None):
  monkeypatch.setattr(jax_setup.xla_bridge, 'backends_are_initialized',
                      lambda: False)
  monkeypatch.delenv('JAX_PLATFORMS', raising=False)
  if xla_flags is None:
    monkeypatch.delenv('XLA_FLAGS', raising=False)
  else:
    monkeypatch.setenv('XLA_FLAGS', xla_flags)


def test_kernels_chosen_by_the_run_s_models(monkeypatch):
  _fresh(monkeypatch)
  # 32 x 32 ViTs only: XLA's default (YNNPACK's dots are faster for them).
  assert not jax_setup.select_cpu_kernels([_VIT32, _VIT32])
  assert 'XLA_FLAGS' not in os.environ
  # A 32 x 32 convolutional twin: convolutions to Eigen, dots kept.
  assert jax_setup.select_cpu_kernels([_VIT32, _RESNET32])
  assert os.environ['XLA_FLAGS'] == _FLAG + '-individual_convolution'
  # Any full-size model: no YNNPACK at all.
  _fresh(monkeypatch)
  assert jax_setup.select_cpu_kernels([_RESNET32, _VIT32, _RESNET224])
  assert os.environ['XLA_FLAGS'] == _FLAG
  assert jax_setup.cpu_kernels([models.model_info('vit_small_patch16_224')]
                               ) == ''
  assert jax_setup.cpu_kernels([models.model_info('regnetx_cifar')]
                               ) == '-individual_convolution'
  assert jax_setup.cpu_kernels([]) is None


def test_user_flags_are_kept_and_win(monkeypatch):
  _fresh(monkeypatch, '--xla_cpu_enable_fast_math=false')
  assert jax_setup.select_cpu_kernels([_RESNET224])
  assert os.environ['XLA_FLAGS'] == '--xla_cpu_enable_fast_math=false ' + _FLAG
  _fresh(monkeypatch, jax_setup.YNN_FLAG + '=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT')
  assert not jax_setup.select_cpu_kernels([_RESNET224])
  assert os.environ['XLA_FLAGS'].endswith('INDIVIDUAL_DOT')


def test_not_applied_when_too_late_or_not_cpu(monkeypatch):
  _fresh(monkeypatch)
  monkeypatch.setenv('JAX_PLATFORMS', 'tpu')
  assert not jax_setup.select_cpu_kernels([_RESNET224])
  monkeypatch.delenv('JAX_PLATFORMS')
  monkeypatch.setattr(jax_setup.xla_bridge, 'backends_are_initialized',
                      lambda: True)
  assert not jax_setup.select_cpu_kernels([_RESNET32])
  assert 'XLA_FLAGS' not in os.environ


def test_models_of_a_config():
  from robustmq_jax import config_loading  # pylint: disable=g-import-not-at-top
  assert main._model_infos(config_loading.load('configs/resnet18_w4.py')) == [
      _RESNET224]
  assert main._model_infos(
      config_loading.load('configs/vit_w4.py:sample')) == [_VIT32]


def test_flag_set_before_backends_start_takes_effect():
  # XLA reads XLA_FLAGS when the first backend starts: setting it after
  # `import jax` (as the main job does) must change the compiled programs.
  code = (
      'import sys, jax, jax.numpy as jnp\n'
      'from robustmq_jax import jax_setup, models\n'
      'if sys.argv[1] != "none":\n'
      '  jax_setup.select_cpu_kernels([models.model_info(sys.argv[1])])\n'
      'conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), '
      '"SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))\n'
      'dot = jax.jit(lambda a, b: a @ b)\n'
      'pool = jax.jit(lambda x: jnp.mean(jax.nn.relu(x), axis=(1, 2)))\n'
      'x, w = jnp.ones((1, 28, 28, 64)), jnp.ones((3, 3, 64, 64))\n'
      'a, b = jnp.ones((64, 256)), jnp.ones((256, 256))\n'
      'print(*(f.lower(*args).compile().as_text().lower().count("ynn")\n'
      '        for f, args in ((conv, (x, w)), (dot, (a, b)), (pool, (x,)))))'
      '\n')
  env = {k: v for k, v in os.environ.items()
         if k not in ('XLA_FLAGS', 'JAX_PLATFORMS')}

  def counts(arg):
    out = subprocess.run([sys.executable, '-c', code, arg], env=env,
                         capture_output=True, text=True, check=True).stdout
    return tuple(int(v) for v in out.split()[-3:])

  default = counts('none')
  # XLA's default makes a YNN fusion of each; the ViT twin keeps it.
  assert min(default) > 0, default
  assert counts('vit_tiny_patch4_32') == default
  # A convolutional twin moves convolutions only: dots and reductions stay.
  conv, dot, pool = counts('resnet20_cifar')
  assert conv < default[0] and (dot, pool) == default[1:], (default, conv)
  # A full-size model moves all three.
  assert all(n < d for n, d in zip(counts('resnet18'), default)), default
