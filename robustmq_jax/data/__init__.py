"""Data sources by name: 'sample', 'tfds:<name>[:<split>]', 'folder:<path>'."""

from robustmq_jax.data.base import Dataset
from robustmq_jax.data.base import HostBatch
from robustmq_jax.data.base import iter_batches
from robustmq_jax.data.base import lazy_arrays
from robustmq_jax.errors import invalid

SOURCES = ('sample', 'tfds:<name>[:<split>]', 'folder:<path>')


def get_dataset(source: str, *, split: str | None = None,
                data_dir: str | None = None, image_size: int | None = None):
  """Opens an evaluation (or, with split='train', training) split.

  Args:
    source: 'sample', 'tfds:<name>[:<split>]' or 'folder:<path>'.
    split: overrides the split ('train' for calibration / QAT data).
    data_dir: TFDS data_dir.
    image_size: model input side (default: the dataset's native / 224).

  Returns:
    A `Dataset`.
  """
  if source == 'sample':
    from robustmq_jax.data.sample import SampleDataset  # pylint: disable=g-import-not-at-top
    return SampleDataset(split or 'test')
  if source.startswith('tfds:') and len(source) > 5:
    from robustmq_jax.data.tfds_source import TfdsDataset  # pylint: disable=g-import-not-at-top
    name, _, src_split = source[5:].partition(':')
    return TfdsDataset(name, split or src_split or None, data_dir, image_size)
  if source.startswith('folder:') and len(source) > 7:
    from robustmq_jax.data.folder import FolderDataset  # pylint: disable=g-import-not-at-top
    if split == 'train':
      raise invalid('config.data.train_source', '', 'a separate '
                    "'folder:<train dir>' when the data source is a folder")
    return FolderDataset(source[7:], image_size or 224)
  raise invalid('config.data.source', source, SOURCES)
