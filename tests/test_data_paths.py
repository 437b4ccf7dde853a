"""Data paths are checked before the first cell runs, with one sentence."""

import os

import pytest

from robustmq_jax import runner
from robustmq_jax.data import fake_imagenet
from robustmq_jax.errors import UserError
from tests.test_main import sample_config


@pytest.fixture(scope='module')
def val_folder(tmp_path_factory):
  root = tmp_path_factory.mktemp('fake') / 'val'
  fake_imagenet.write_folder(str(root), num_classes=2, per_class=2)
  return str(root)


@pytest.mark.parametrize('train_source,match', [
    ('', "config.data.train_source='' is not valid; allowed: a separate "
         "'folder:<train dir>'"),
    ('folder:/nonexistent/train', 'folder not found'),
])
def test_a_bad_train_source_fails_before_any_cell(tmp_path, val_folder,
                                                  train_source, match):
  config = sample_config('resnet18_w4.py', **{
      'data.source': 'folder:' + val_folder,
      'data.train_source': train_source, 'data.num_examples': 0})
  config.precisions = ('fp32', 'w4a4')  # fp32 alone would not need it.
  with pytest.raises(UserError, match=match) as e:
    runner.run(config, str(tmp_path / 'w'))
  assert len(str(e.value).splitlines()) == 1
  assert not os.path.exists(tmp_path / 'w')  # Nothing written, no cell run.
