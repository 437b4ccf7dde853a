r"""Writes an ImageNet-shaped fake dataset of full-size JPEGs.

  python scripts/make_fake_imagenet.py --out=/tmp/fake_imagenet \
      --classes=10 --train_per_class=60 --val_per_class=10

Writes OUT/train/<synset>/*.JPEG and OUT/val/<synset>/*.JPEG (class-per-folder,
`--config.data.source=folder:OUT/val --config.data.train_source=folder:OUT/train`)
and, unless --noarray_record, the same images as the TFDS ArrayRecord dataset
`fake_imagenet` in OUT/tfds (`--config.data.source=tfds:fake_imagenet:validation
--config.data.data_dir=OUT/tfds`), built without TensorFlow.
"""

import os

from absl import app
from absl import flags

from robustmq_jax.data import fake_imagenet

_OUT = flags.DEFINE_string('out', None, 'Output folder.')
_CLASSES = flags.DEFINE_integer('classes', 10, 'Number of classes.')
_TRAIN = flags.DEFINE_integer('train_per_class', 60, 'Train images per class.')
_VAL = flags.DEFINE_integer('val_per_class', 10, 'Val images per class.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed.')
_ARRAY_RECORD = flags.DEFINE_bool('array_record', True,
                                  'Also write the TFDS ArrayRecord dataset.')
flags.mark_flag_as_required('out')


def main(argv):
  del argv
  for name, value in (('classes', _CLASSES.value),
                      ('train_per_class', _TRAIN.value),
                      ('val_per_class', _VAL.value)):
    if value < 1:
      raise app.UsageError(f'--{name}={value} is not valid; allowed: an '
                           'integer >= 1.')
  out = _OUT.value
  for split, per_class, offset in (('train', _TRAIN.value, 1),
                                   ('val', _VAL.value, 0)):
    n = fake_imagenet.write_folder(os.path.join(out, split), _CLASSES.value,
                                   per_class, seed=_SEED.value * 1000 + offset)
    print(f'{os.path.join(out, split)}: {n} JPEGs')
  if _ARRAY_RECORD.value:
    path = fake_imagenet.write_array_record(
        os.path.join(out, 'tfds'), _CLASSES.value,
        {'train': _TRAIN.value, 'validation': _VAL.value}, seed=_SEED.value)
    print(f'{path}: tfds:{fake_imagenet.DATASET_NAME} (train, validation)')


if __name__ == '__main__':
  app.run(main)
