"""Data sources: the embedded sample, TFDS, folders, preprocessing."""

import io

import numpy as np
from PIL import Image
import pytest

from robustmq_jax import data
from robustmq_jax.data import preprocess
from robustmq_jax.errors import UserError


def test_sample_is_jpeg_digits_with_fixed_split():
  test, train = data.get_dataset('sample'), data.get_dataset('sample',
                                                             split='train')
  assert (test.num_examples, train.num_examples) == (359, 1438)
  assert test.num_classes == 10 and test.image_size == 32
  raw = test.jpeg_bytes(0)
  assert raw[:3] == b'\xff\xd8\xff'  # A JPEG file, kept encoded.
  images = test.images([0, 1, 2])
  assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
  np.testing.assert_array_equal(
      images[0], np.asarray(Image.open(io.BytesIO(raw)).convert('RGB')))
  assert sorted(set(train.labels(range(1438)))) == list(range(10))
  # Deterministic: the same ids give the same labels on every load.
  assert list(test.labels([5, 6, 7])) == list(
      data.get_dataset('sample').labels([5, 6, 7]))


def test_resize_crop_is_res256crop224():
  img = Image.fromarray(np.random.default_rng(0).integers(
      0, 255, (300, 400, 3), dtype=np.uint8))
  out = preprocess.resize_crop(img, 224)
  assert out.shape == (224, 224, 3)
  # Same as resizing the shorter side to 256 and centre-cropping by hand.
  ref = np.asarray(img.resize((341, 256), Image.Resampling.BILINEAR))
  np.testing.assert_array_equal(out, ref[16:240, 58:282])
  small = Image.fromarray(np.zeros((32, 32, 3), np.uint8))
  assert preprocess.resize_crop(small, 32).shape == (32, 32, 3)


def test_folder_source(tmp_path):
  rng = np.random.default_rng(0)
  for cls in ('n02', 'n01'):
    (tmp_path / cls).mkdir()
    for i in range(3):
      Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(
          tmp_path / cls / f'{i}.JPEG')
  ds = data.get_dataset(f'folder:{tmp_path}', image_size=32)
  assert ds.num_examples == 6 and ds.classes == ['n01', 'n02']
  assert list(ds.labels(range(6))) == [0, 0, 0, 1, 1, 1]
  assert ds.images([0, 5]).shape == (2, 32, 32, 3)
  assert ds.jpeg_bytes(0)[:2] == b'\xff\xd8'


def test_tfds_source_reads_mocked_data():
  tfds = pytest.importorskip('tensorflow_datasets')
  from robustmq_jax.data.tfds_source import TfdsDataset  # pylint: disable=g-import-not-at-top
  with tfds.testing.mock_data(num_examples=6):
    ds = TfdsDataset('cifar10', 'test', None, raw_bytes=False)
    assert ds.num_examples == 6 and ds.num_classes == 10
    assert ds.image_size == 32
    assert ds.images([0, 1]).shape == (2, 32, 32, 3)
    assert ds.jpeg_bytes(0)[:4] == b'\x89PNG'


@pytest.mark.parametrize('source,match', [
    ('tfds:cifar10', 'no prepared ArrayRecord data'),
    ('tfds:no_such_dataset_xyz', 'TFDS does not know'),
    ('folder:/no/such/dir', 'folder not found'),
    ('imagenet', "config.data.source='imagenet'"),
])
def test_missing_data_errors_say_where_and_how(tmp_path, source, match):
  pytest.importorskip('tensorflow_datasets')
  with pytest.raises(UserError, match=match) as e:
    data.get_dataset(source, data_dir=str(tmp_path))
  if source.startswith('tfds:cifar10'):
    assert str(tmp_path) in str(e.value) and 'tfds build' in str(e.value)
