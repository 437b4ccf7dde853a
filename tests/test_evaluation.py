"""The sharded evaluation path: identical sums on 8 devices and on 1."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustmq_jax.data import iter_batches
from robustmq_jax.evaluation import Evaluator
from robustmq_jax.evaluation import make_mesh
from tests import fakes


def per_example(params, batch, key):
  del key
  logits = fakes.linear_apply(params, batch['image'])
  return {
      'correct': (jnp.argmax(logits, -1) == batch['label']).astype(jnp.int32),
      'label_sum': batch['label'],
      'id_sum': batch['id'],
  }


def _sums(devices, batch_size, ds):
  evaluator = Evaluator(make_mesh(devices))
  return evaluator.sums(per_example, iter_batches(ds, batch_size),
                        variables=fakes.linear_params())


def test_eight_fake_devices_are_present():
  assert jax.device_count() == 8


@pytest.mark.parametrize('n', [37, 64, 1])
def test_8_devices_equal_1_device_with_padded_last_batch(n):
  ds = fakes.random_dataset(n)
  one = _sums(jax.devices()[:1], 16, ds)
  eight = _sums(jax.devices(), 16, ds)
  assert one == eight
  assert one['n'] == n
  # The padded rows contribute nothing: compare with a direct numpy count.
  logits = fakes.linear_apply(fakes.linear_params(),
                              ds.images(range(n)).astype(np.float32) / 255)
  assert one['correct'] == np.sum(np.argmax(logits, -1) == ds.labels(range(n)))
  assert one['label_sum'] == ds.labels(range(n)).sum()
  assert one['id_sum'] == sum(range(n))


def test_batch_size_does_not_change_sums():
  ds = fakes.random_dataset(37)
  assert _sums(jax.devices(), 8, ds) == _sums(jax.devices(), 24, ds)


def test_iter_batches_splits_processes_evenly():
  ds = fakes.random_dataset(37)
  shares = [list(iter_batches(ds, 8, process_index=i, process_count=3))
            for i in range(3)]
  assert len({len(s) for s in shares}) == 1  # Same number of steps each.
  ids = np.concatenate([b.id[b.mask] for s in shares for b in s])
  assert sorted(ids) == list(range(37))
