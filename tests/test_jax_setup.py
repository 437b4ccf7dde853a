"""Process setup done before JAX creates its backends (jax_setup.py)."""

import os
import subprocess
import sys

from robustmq_jax import jax_setup
from robustmq_jax import main

_FLAG = jax_setup.YNN_FLAG + '='


def _fresh(monkeypatch, xla_flags=None):
  monkeypatch.setattr(jax_setup.xla_bridge, 'backends_are_initialized',
                      lambda: False)
  monkeypatch.delenv('JAX_PLATFORMS', raising=False)
  if xla_flags is None:
    monkeypatch.delenv('XLA_FLAGS', raising=False)
  else:
    monkeypatch.setenv('XLA_FLAGS', xla_flags)


def test_eigen_kernels_only_for_full_size_models(monkeypatch):
  _fresh(monkeypatch)
  assert not jax_setup.select_cpu_kernels([32, 32])
  assert 'XLA_FLAGS' not in os.environ
  assert jax_setup.select_cpu_kernels([32, 224])
  assert os.environ['XLA_FLAGS'] == _FLAG


def test_user_flags_are_kept_and_win(monkeypatch):
  _fresh(monkeypatch, '--xla_cpu_enable_fast_math=false')
  assert jax_setup.select_cpu_kernels([224])
  assert os.environ['XLA_FLAGS'] == '--xla_cpu_enable_fast_math=false ' + _FLAG
  _fresh(monkeypatch, jax_setup.YNN_FLAG + '=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT')
  assert not jax_setup.select_cpu_kernels([224])
  assert os.environ['XLA_FLAGS'].endswith('INDIVIDUAL_DOT')


def test_not_applied_when_too_late_or_not_cpu(monkeypatch):
  _fresh(monkeypatch)
  monkeypatch.setenv('JAX_PLATFORMS', 'tpu')
  assert not jax_setup.select_cpu_kernels([224])
  monkeypatch.delenv('JAX_PLATFORMS')
  monkeypatch.setattr(jax_setup.xla_bridge, 'backends_are_initialized',
                      lambda: True)
  assert not jax_setup.select_cpu_kernels([224])
  assert 'XLA_FLAGS' not in os.environ


def test_image_sizes_of_a_config():
  from robustmq_jax import config_loading  # pylint: disable=g-import-not-at-top
  assert main._image_sizes(config_loading.load('configs/resnet18_w4.py')) == [
      224]
  assert main._image_sizes(
      config_loading.load('configs/vit_w4.py:sample')) == [32]


def test_flag_set_before_backends_start_takes_effect():
  # XLA reads XLA_FLAGS when the first backend starts: setting it after
  # `import jax` (as the main job does) must change the compiled program.
  code = (
      'import os, sys, jax, jax.numpy as jnp\n'
      'from robustmq_jax import jax_setup\n'
      'if sys.argv[1] == "on": jax_setup.select_cpu_kernels([224])\n'
      'f = jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), '
      '"SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))\n'
      'x, w = jnp.ones((1, 28, 28, 64)), jnp.ones((3, 3, 64, 64))\n'
      'print(f.lower(x, w).compile().as_text().lower().count("ynn"))\n')
  env = {k: v for k, v in os.environ.items()
         if k not in ('XLA_FLAGS', 'JAX_PLATFORMS')}
  counts = [int(subprocess.run([sys.executable, '-c', code, arg], env=env,
                               capture_output=True, text=True,
                               check=True).stdout.split()[-1])
            for arg in ('off', 'on')]
  # With YNNPACK the convolution is a YNN fusion; without, it is not.
  assert counts[1] < counts[0], counts
