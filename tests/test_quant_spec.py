"""Quantization specs, error messages, storage packing and the jax shim."""

from aqt.jax.v2.flax import aqt_flax_dg_core
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustmq_jax import quant
from robustmq_jax.errors import UserError
from robustmq_jax.quant import compat
from robustmq_jax.quant import reference
from robustmq_jax.quant import storage


@pytest.mark.parametrize('precision,bits', [
    ('fp32', (None, None)), ('w8a8', (8, 8)), ('w6a6', (6, 6)),
    ('w4a4', (4, 4)), ('w2a2', (2, 2)), ('w4a16', (4, None)),
    ('w8a32', (8, None)), ('w4a8', (4, 8))])
def test_parse_precision(precision, bits):
  assert quant.parse_precision(precision) == bits
  quant.validate_precision(precision)


@pytest.mark.parametrize('precision,needle', [
    ('w0a0', 'weight bits 0'), ('w9a9', 'weight bits 9'),
    ('w4a9', 'activation bits 9'), ('w4a1', 'activation bits 1'),
    ('w16a8', 'activation bits without weight bits'),
    ('a8', "'fp32' or 'w<W>a<A>'"), ('int8', "'fp32' or 'w<W>a<A>'"),
    ('W4A4', "'fp32' or 'w<W>a<A>'")])
def test_bad_precisions_name_field_value_and_rule(precision, needle):
  with pytest.raises(UserError) as e:
    quant.validate_precision(precision, 'config.precisions')
  msg = str(e.value)
  assert msg.startswith(f'config.precisions={precision!r}'), msg
  assert needle in msg, msg
  assert 'allowed' in msg


@pytest.mark.parametrize('field,value', [
    ('method', 'gptq'), ('granularity', 'per_row'), ('calibration', 'kl'),
    ('symmetric', False), ('first_last', 'int4'), ('num_calib_batches', 0),
    ('percentile', 101.0), ('eval_int8', 'yes'), ('backend', 'qwix')])
def test_bad_config_fields(field, value):
  qc = quant.default_config().to_dict()  # ConfigDict would refuse the type.
  qc[field] = value
  with pytest.raises(UserError, match=f'config.quant.{field}='):
    quant.validate_config(qc)


def test_bad_qat_recipe():
  qc = quant.default_config()
  qc.qat.steps = -1
  with pytest.raises(UserError, match='config.quant.qat.steps=-1'):
    quant.validate_config(qc)


def test_defaults_validate_and_fingerprint():
  for variant in ('', 'imagenet', 'sample'):
    quant.validate_config(quant.default_config(variant))
  assert quant.default_config('sample').method == 'lsq'
  spec = quant.parse_spec('w4a4', quant.default_config())
  assert (spec.w_bits, spec.a_bits, spec.method) == (4, 4, 'ptq')
  assert spec.granularity == 'per_tensor' and spec.first_last == '8bit'
  fp = spec.fingerprint()
  assert 'eval_int8' not in fp and 'checkpoint_dir' not in fp
  assert 'qat' not in fp  # PTQ does not depend on the QAT recipe.
  lsq = quant.parse_spec('w4a4', quant.default_config('sample'))
  assert lsq.fingerprint(seed=3)['seed'] == 3
  assert quant.parse_spec('fp32', None).is_float


@pytest.mark.parametrize('bits', range(2, 9))
def test_pack_bits_round_trip(bits):
  rng = np.random.default_rng(bits)
  v = rng.integers(0, 2**bits, size=1001)
  packed = storage.pack_bits(v, bits)
  assert packed.dtype == np.uint8
  assert packed.size == -(-1001 * bits // 8)  # Compact: bits per value.
  np.testing.assert_array_equal(storage.unpack_bits(packed, bits, 1001), v)


@pytest.mark.parametrize('bits', [2, 4, 8])
@pytest.mark.parametrize('unsigned', [False, True])
def test_reference_rules_and_numpy_twin(bits, unsigned):
  """Grid, scale rule, ties to even; the numpy twin is bit-identical."""
  qmin, qmax = reference.int_range(bits, unsigned)
  assert qmax - qmin == 2**bits - 1
  bound = 1.7
  s = reference.scale_from_bound(bound, bits, unsigned)
  assert float(s) == pytest.approx(
      bound / ((2**bits - 1) if unsigned else (2**bits - 1) / 2))
  rng = np.random.default_rng(0)
  x = rng.normal(size=4096).astype(np.float32) * 1.2
  x[:8] = np.asarray([0.5, 1.5, -0.5, -2.5, 0, bound, -bound, 9.0]) * float(s)
  q = np.asarray(reference.quantize(jnp.asarray(x), s, bits, unsigned))
  assert q.min() >= qmin and q.max() <= qmax
  np.testing.assert_array_equal(q, reference.quantize_np(x, s, bits,
                                                         unsigned))
  # Scales are applied through their reciprocal, as in AQT.
  inv = np.float32(1) / np.float32(s)
  expected = np.clip(np.rint(x[:8] * inv), qmin, qmax)
  np.testing.assert_array_equal(q[:8], expected)
  np.testing.assert_array_equal(
      np.asarray(reference.dequantize(jnp.asarray(q), s)),
      reference.dequantize_np(q, np.asarray(s)))


def test_fake_quant_ste_gradient_is_masked_identity():
  s = jnp.float32(0.1)
  x = jnp.asarray([-1.0, -0.3, 0.04, 0.31, 0.5], jnp.float32)
  g = jax.grad(lambda x: jnp.sum(reference.fake_quant_ste(x, s, 2)))(x)
  # 2-bit signed grid [-2, 1] * 0.1: -1.0 and 0.31, 0.5 are clipped.
  np.testing.assert_array_equal(np.asarray(g), [0, 0, 1, 0, 0])


def test_compat_shim_is_scoped_to_aqt():
  compat.install()
  assert compat.needed() == (not hasattr(jax.core, 'get_aval'))
  if compat.needed():
    # The global jax.core is untouched; AQT's module sees get_aval.
    assert not hasattr(jax.core, 'get_aval')
    assert aqt_flax_dg_core.jax.core.get_aval is jax.typeof
    assert aqt_flax_dg_core.jax.lax is jax.lax
  compat.install()  # Idempotent.
