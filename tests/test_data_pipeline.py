"""File-backed sources: fake ImageNet, Grain decoding, the subset cache."""

import os

import numpy as np
import pytest

from robustmq_jax.data import fake_imagenet
from robustmq_jax.data import get_dataset
from robustmq_jax.data import iter_batches
from robustmq_jax.data import pipeline

CLASSES, TRAIN, VAL = 3, 4, 3


@pytest.fixture(scope='module')
def fake_root(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('fake_imagenet'))
  fake_imagenet.write_folder(os.path.join(root, 'val'), CLASSES, VAL, seed=0)
  fake_imagenet.write_folder(os.path.join(root, 'train'), CLASSES, TRAIN,
                             seed=1)
  fake_imagenet.write_array_record(os.path.join(root, 'tfds'), CLASSES,
                                   {'train': TRAIN, 'validation': VAL})
  return root


def test_fake_imagenet_is_imagenet_shaped(fake_root):
  ds = get_dataset(f'folder:{fake_root}/val')
  assert (ds.num_examples, ds.num_classes) == (CLASSES * VAL, CLASSES)
  from PIL import Image  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  sizes = {Image.open(io.BytesIO(ds.jpeg_bytes(i))).size
           for i in range(ds.num_examples)}
  assert all(min(s) >= 188 for s in sizes) and len(sizes) > 1
  assert ds.images([0]).shape == (1, 224, 224, 3)


def test_tfds_array_record_holds_the_folder_images(fake_root):
  folder = get_dataset(f'folder:{fake_root}/val')
  tfds_ds = get_dataset('tfds:fake_imagenet:validation',
                        data_dir=f'{fake_root}/tfds')
  assert tfds_ds.num_examples == folder.num_examples
  want = sorted(folder.jpeg_bytes(i) for i in range(folder.num_examples))
  got = sorted(tfds_ds.jpeg_bytes(i) for i in range(tfds_ds.num_examples))
  assert got == want  # Same files (TFDS stores them in its own order).


@pytest.mark.parametrize('workers', [0, 2])
def test_parallel_batches_equal_serial_decoding(fake_root, workers):
  ds = get_dataset(f'folder:{fake_root}/val')
  ds.decode_options = pipeline.DecodeOptions(workers=workers, threads=2)
  ids = np.array([7, 0, 3, 8, 1])
  ds.images = None  # The parallel path must not fall back to images().
  batches = list(iter_batches(ds, 2, ids=ids))
  serial = get_dataset(f'folder:{fake_root}/val')
  want = np.stack([serial.decode_one(int(i)) for i in ids])
  got = np.concatenate([b.image for b in batches])[:len(ids)]
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(
      np.concatenate([b.id for b in batches])[:len(ids)], ids)
  assert [int(b.mask.sum()) for b in batches] == [2, 2, 1]


def test_decoded_subset_is_cached_once_within_its_bound(fake_root):
  ds = get_dataset(f'folder:{fake_root}/val')
  one = 224 * 224 * 3
  ds.decode_options = pipeline.DecodeOptions(cache_limit_bytes=3 * one)
  calls = []
  decode = ds.decode_one
  ds.decode_one = lambda i: calls.append(i) or decode(i)
  list(iter_batches(ds, 2, ids=np.arange(3)))
  assert sorted(calls) == [0, 1, 2] and ds.cache.nbytes == 3 * one
  list(iter_batches(ds, 2, ids=np.arange(3)))
  assert len(calls) == 3  # Second pass: from the cache.
  list(iter_batches(ds, 2, ids=np.arange(5)))
  assert ds.cache.nbytes == 3 * one  # The bound holds.


def test_process_shares_are_disjoint_and_cover_the_ids(fake_root):
  ds = get_dataset(f'folder:{fake_root}/val')
  ids = np.arange(ds.num_examples)
  seen = []
  for p in range(2):
    for b in iter_batches(ds, 2, ids=ids, process_index=p, process_count=2):
      seen += list(b.id[b.mask])
  assert sorted(seen) == list(ids)


def test_calibration_decodes_only_its_images_whatever_the_split_size(
    fake_root):
  """PTQ calibration over a lazily read split decodes its 8 images and gets
  the same batches as over the fully decoded split."""
  from robustmq_jax.data.base import lazy_arrays  # pylint: disable=g-import-not-at-top
  from robustmq_jax.quant import calibration  # pylint: disable=g-import-not-at-top

  class Spec:
    num_calib_batches, calib_batch_size = 2, 4

  ds = get_dataset(f'folder:{fake_root}/train')
  calls = []
  decode = ds.decode_one
  ds.decode_one = lambda i: calls.append(i) or decode(i)
  images, labels = lazy_arrays(ds)
  lazy = calibration.calibration_batches(images, Spec, seed=5)
  assert len(calls) == 8 and len(images) == CLASSES * TRAIN
  full = get_dataset(f'folder:{fake_root}/train').arrays()[0]
  for a, b in zip(lazy, calibration.calibration_batches(full, Spec, seed=5)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(labels[[0, 5]], ds.labels([0, 5]))


def test_make_fake_imagenet_refuses_a_bad_count(tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run(
      [sys.executable, os.path.join(root, 'scripts', 'make_fake_imagenet.py'),
       f'--out={tmp_path}', '--classes=0'], capture_output=True, text=True,
      check=False)
  assert out.returncode != 0
  assert '--classes=0 is not valid; allowed: an integer >= 1.' in out.stderr
  assert not os.listdir(tmp_path)  # Nothing written.
