"""Properties of every corruption: shapes, dtypes, range, determinism, and
independence from jit, batch position, batch size and device count.

Each corruption is compiled once, with the batch sharded over the 8 fake CPU
devices of conftest.py and the severity traced; eager calls (op by op, one
device, concrete severity) must give the same images.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustmq_jax import corruptions
from robustmq_jax.corruptions import params
from robustmq_jax.errors import UserError
from tests import corruption_testlib as lib

N = lib.N
# Eager (op-by-op) execution of these compiles hundreds of small programs:
# tens of seconds each on a CPU, so their eager comparison is marked slow.
EAGER_SLOW = {'shot_noise', 'glass_blur', 'motion_blur', 'snow', 'fog',
              'elastic_transform', 'jpeg_compression', 'spatter'}


@pytest.fixture(scope='module')
def images():
  return lib.sample_images()


@pytest.mark.parametrize('name', corruptions.ALL)
def test_corruption_properties(name, images):
  assert len(jax.devices()) == N
  ids = jnp.arange(100, 100 + N)
  keys = corruptions.keys_for_ids(jax.random.key(7), ids)
  x = jnp.asarray(images, jnp.float32) / 255.0
  fn = lib.sharded_fn(name)
  for severity in (1, 5):
    out = fn(keys, x, jnp.int32(severity))
    # Shape, dtype, range.
    assert out.shape == x.shape and out.dtype == jnp.float32
    o = np.asarray(out)
    assert np.isfinite(o).all() and o.min() >= 0.0 and o.max() <= 1.0
    # Same key, same images; 8 devices == 1 device.
    np.testing.assert_array_equal(o, np.asarray(fn(keys, x, severity)))
    one = np.asarray(lib.single_fn(name)(keys, x, severity))
    np.testing.assert_allclose(o, one, atol=2e-5)
    # Position in the batch does not matter (keys travel with the images).
    perm = np.array([3, 0, 7, 5, 1, 6, 2, 4])
    shuffled = np.asarray(fn(keys[perm], x[perm], severity))
    np.testing.assert_array_equal(shuffled, o[perm])
    # The corruption changes the images.
    assert np.abs(o - np.asarray(x)).max() > 0.0
  if corruptions.is_random(name):
    other = corruptions.keys_for_ids(jax.random.key(8), ids)
    assert np.abs(np.asarray(fn(other, x, 5)) - o).max() > 0
  else:
    np.testing.assert_array_equal(
        np.asarray(fn(jax.random.split(jax.random.key(1), N), x, 5)), o)


@pytest.mark.parametrize('name', [
    pytest.param(n, marks=pytest.mark.slow) if n in EAGER_SLOW else n
    for n in corruptions.ALL])
def test_jit_equals_eager(name, images):
  """Op-by-op execution with a concrete severity == the compiled program."""
  keys = lib.keys(7, jnp.arange(100, 100 + N))
  x = lib.to_float(images)
  for severity in (2, 4):
    jitted = np.asarray(lib.single_fn(name)(keys, x, severity))
    eager = np.asarray(corruptions.apply(name, keys, x, severity=severity))
    np.testing.assert_allclose(jitted, eager, atol=2e-5)


@pytest.mark.parametrize('name', ['contrast', 'fog'])
def test_dtypes(name, images):
  key = jax.random.key(0)
  u8 = jnp.asarray(images)
  out_f = corruptions.apply(name, key, u8.astype(jnp.float32) / 255,
                            severity=3)
  out_u8 = corruptions.apply(name, key, u8, severity=3)
  assert out_u8.dtype == jnp.uint8 and out_u8.shape == u8.shape
  # uint8 output truncates like the released datasets' np.uint8.
  np.testing.assert_array_equal(
      np.asarray(out_u8), np.floor(np.asarray(out_f) * 255 + 1e-3))
  out_bf = corruptions.apply(name, key, u8.astype(jnp.bfloat16) / 255,
                             severity=3)
  assert out_bf.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out_bf, np.float32),
                             np.asarray(out_f), atol=2e-2)


@pytest.mark.parametrize('name', [
    'gaussian_noise', pytest.param('glass_blur', marks=pytest.mark.slow),
    pytest.param('snow', marks=pytest.mark.slow)])
def test_batch_size_independence(name, images):
  """A 3-image batch gives the same images as the 8-image batch's rows."""
  x = lib.to_float(images)
  ids = jnp.arange(N) * 3 + 11
  fn = lib.single_fn(name)
  full = fn(lib.keys(5, ids), x, 4)
  part = fn(lib.keys(5, ids[5:]), x[5:], 4)
  np.testing.assert_allclose(np.asarray(part), np.asarray(full[5:]),
                             atol=1e-6)
  # A single key instead: example i of the batch uses fold_in(key, i).
  key = jax.random.key(5)
  single = fn(key, x[5:], 4)
  by_pos = fn(lib.keys(5, jnp.arange(3)), x[5:], 4)
  np.testing.assert_array_equal(np.asarray(single), np.asarray(by_pos))


# Severity pairs whose order the reference parameters themselves invert
# (tests/test_corruptions_fidelity.py checks the reference shows the same):
# glass blur s1/s2 (sigma 0.7, 2 passes vs 0.9, 1 pass at 224; 0.05 vs 0.25 at
# 32), saturate s3 (saturation x2 / x1.5 is closer to the original than x0.1),
# elastic (224: s1-2 are large smooth warps; 32: the affine jitter shrinks
# with severity), frost (which picture is drawn dominates), and at 32 motion
# s3/s4, pixelate s1-s4 (boxes of 1-2 pixels on smooth digits) and spatter
# (water at 1-3, mud at 4-5).
NON_MONOTONE = {
    '224': {'glass_blur', 'saturate', 'elastic_transform', 'frost'},
    '32': {'glass_blur', 'saturate', 'elastic_transform', 'frost',
           'motion_blur', 'pixelate', 'spatter'},
}


@pytest.mark.parametrize('name', corruptions.ALL)
def test_severity_lowers_psnr(name, images):
  """PSNR against the clean image falls as severity rises (32x32 table)."""
  if name in NON_MONOTONE['32']:
    pytest.skip('reference parameters are not monotone at 32 (see above)')
  x = jnp.asarray(images, jnp.float32) / 255.0
  fn = lib.sharded_fn(name)  # compiled once for all corruption tests
  psnr = []
  for s in range(1, 6):
    keys = [corruptions.keys_for_ids(jax.random.key(r), jnp.arange(N))
            for r in range(2)]
    psnr.append(np.mean([lib.psnr(fn(k, x, jnp.int32(s)), x) for k in keys]))
  assert all(a > b for a, b in zip(psnr, psnr[1:])), psnr


def test_registry_and_errors(images):
  assert len(corruptions.list_corruptions()) == 19
  assert corruptions.list_corruptions('benchmark') == list(
      corruptions.BENCHMARK)
  assert corruptions.list_corruptions('weather') == [
      'snow', 'frost', 'fog', 'brightness', 'spatter']
  x = jnp.asarray(images[:1], jnp.float32) / 255
  with pytest.raises(UserError, match='corruption'):
    corruptions.apply('rain', None, x, severity=1)
  for bad in (0, 6, 2.5):
    with pytest.raises(UserError, match='severity'):
      corruptions.apply('contrast', None, x, severity=bad)
  with pytest.raises(UserError, match='images.shape'):
    corruptions.apply('contrast', None, x[0], severity=1)
  with pytest.raises(UserError, match='key'):
    corruptions.apply('fog', None, x, severity=1)
  with pytest.raises(UserError, match='table'):
    corruptions.apply('contrast', None, x, severity=1, table='100')


def test_tables():
  t224, t64, t32 = (params.TABLES[n] for n in ('224', '64', '32'))
  assert [len(f) for f in t224.zoom_factors()] == [12, 16, 11, 13, 11]
  assert [len(f) for f in t32.zoom_factors()] == [7, 12, 16, 21, 26]
  assert [len(f) for f in t64.zoom_factors()] == [7, 12, 16, 21, 26]
  assert [int(224 * c) for c in t224.fields('pixelate')['factor']] == [
      134, 112, 89, 67, 56]
  assert [int(32 * c) for c in t32.fields('pixelate')['factor']] == [
      30, 28, 27, 24, 20]
  np.testing.assert_allclose(t224.fields('elastic_transform')['sigma'],
                             [170.8, 19.52, 2.44, 2.44, 2.44])
  assert t64.frost_scale == 0.3 and t32.frost_scale == 0.2
  assert params.table_for_size(32) == '32'
  assert params.table_for_size(64) == '64'
  assert params.table_for_size(224) == '224'
  assert params.table_for_size(299) == '224'
  for t in (t224, t64, t32):
    assert set(t.values) == set(corruptions.ALL)
    for name in corruptions.ALL:
      assert all(len(v) == 5 for v in t.fields(name).values())


CHUNKED = [n for n in corruptions.ALL
           if corruptions.get(n).spec.cpu_chunk]


@pytest.mark.parametrize('name', CHUNKED)
def test_cpu_chunks_give_the_batched_images(name, images, monkeypatch):
  """Spec.cpu_chunk (a lax.map over chunks, on one CPU device) gives the
  batched images: bitwise, up to one float32 rounding (6e-8 near 1) of a
  final elementwise blend (spatter). An odd batch checks the remainder
  chunk."""
  from robustmq_jax.corruptions import base  # pylint: disable=g-import-not-at-top
  spec = corruptions.get(name).spec
  batch = 2 * spec.cpu_chunk + 1
  keys = corruptions.keys_for_ids(jax.random.key(3), jnp.arange(batch))
  x = jnp.asarray(images[:batch], jnp.float32) / 255.0
  # Compiled while the device count is patched (a fresh function each).
  run = lambda: jax.jit(lambda k, v, s: base.run(spec, k, v, s, None)).lower(
      keys, x, jnp.int32(1)).compile()
  monkeypatch.setattr(jax, 'device_count', lambda: 1)
  assert base.chunked(spec, batch)
  chunked = run()
  monkeypatch.setattr(jax, 'device_count', lambda: 8)
  assert not base.chunked(spec, batch)
  batched = run()
  loops = lambda c: c.as_text().count(' while(')
  assert loops(chunked) > loops(batched)
  for s in (1, 3, 5):
    np.testing.assert_allclose(chunked(keys, x, jnp.int32(s)),
                               batched(keys, x, jnp.int32(s)), rtol=0,
                               atol=6e-8)
