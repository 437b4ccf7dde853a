"""Shared defaults of the study configs in configs/ (no files, no devices)."""

from typing import Mapping

import ml_collections

from robustmq_jax import quant
from robustmq_jax import systematic
from robustmq_jax.errors import invalid
from robustmq_jax.suites import adversarial
from robustmq_jax.suites import corruption
from robustmq_jax.suites import systematic as systematic_suite

SAMPLE_PRECISIONS = ('fp32', 'w8a8', 'w6a6', 'w4a4', 'w2a2')
ALL_SUITES = ('clean', 'adversarial', 'corruption', 'systematic')
VARIANTS = ('', 'imagenet', 'sample', 'sample_full')
# The config args of a study config, as `--help` lists them.
ARGS: Mapping[str, str] = {
    'imagenet': 'ImageNet validation, converted checkpoint (default)',
    'sample': 'embedded sample, small model, quickstart grid (~2 min CPU)',
    'sample_full': 'embedded sample, every attack and decoder (~30 min CPU)',
}


def study_config(arg: str | None, *, imagenet_model: str, sample_model: str,
                 imagenet_precisions: tuple[str, ...]
                 ) -> ml_collections.ConfigDict:
  """The RobustMQ study for one architecture.

  Args:
    arg: None/'imagenet' for ImageNet (checkpoint converted by the user);
      'sample' for the embedded digits sample with the small model, at the
      budgets of the README quickstart (1-3 minutes on a 2-core CPU:
      FGSM and L-inf PGD with transfer, 3 JPEG decoders); 'sample_full' for
      the sample with every attack family (AutoAttack, Square, L2/L1 PGD) and
      every decoder (about half an hour on a 2-core CPU).
    imagenet_model: model name for ImageNet.
    sample_model: model name for the sample.
    imagenet_precisions: precisions for ImageNet.

  Returns:
    The config.
  """
  arg = arg or ''
  if arg not in VARIANTS:
    raise invalid('config arg', arg, tuple(ARGS))
  sample = arg.startswith('sample')
  c = ml_collections.ConfigDict()
  model = sample_model if sample else imagenet_model
  image_size = 32 if sample else 224
  c.models = (model,)
  c.precisions = SAMPLE_PRECISIONS if sample else imagenet_precisions
  c.suites = ALL_SUITES
  c.data = ml_collections.ConfigDict({
      'source': 'sample' if sample else 'tfds:imagenet2012:validation',
      'data_dir': '',       # TFDS data_dir ('' = TFDS default).
      'train_source': '',   # calibration / QAT data ('' = train split).
      'num_examples': 0,    # 0 = the whole split.
  })
  c.batch_size = 64 if sample else 128
  c.seed = 0
  c.log_every_s = 10.0
  c.grid_shard = ''  # 'I/N': one job's share (robustmq_jax/grid_shard.py).
  c.checkpoints = ml_collections.ConfigDict({
      model: (f'checkpoints/sample/{model}/fp32' if sample
              else f'checkpoints/imagenet/{model}/fp32')})
  c.checkpoint_hint = (
      'train it with `python scripts/train.py --model=' + model +
      '` (see checkpoints/README.md)' if sample else '')
  c.quant = quant.default_config('sample' if sample else '')
  c.adversarial = adversarial.default_config(image_size)
  c.corruption = corruption.default_config(image_size)
  c.systematic = systematic_suite.default_config(image_size)
  if arg == 'sample_full':
    c.adversarial.attacks = adversarial.STANDARD_ATTACKS
    c.systematic.decoders = tuple(systematic.DECODERS)
  return c
