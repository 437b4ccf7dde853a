r"""Quantization-aware training: a float checkpoint -> a quantized one.

  python -m robustmq_jax.train --config=configs/qat.py[:ARG] --workdir=DIR \
      [--config.FIELD=VALUE ...]

ImageNet (the default; ResNet-18 from checkpoints/imagenet/resnet18/fp32,
TFDS imagenet2012 train split, or a folder tree with
--config.data.source=folder:VAL --config.data.train_source=folder:TRAIN):
  python -m robustmq_jax.train --config=configs/qat.py \
      --workdir=/runs/qat_resnet18 --config.data.data_dir=$TFDS_DATA_DIR

Smoke test (ResNet-20 on the embedded sample, 60 steps, a checkpoint every
20 steps; under a minute on a 2-core CPU):
  python -m robustmq_jax.train --config=configs/qat.py:smoke --workdir=/tmp/qat

The shipped sample checkpoint checkpoints/sample/resnet20_cifar/w4a4_lsq
again (the sample's quant settings; --config.model=vit_tiny_patch4_32 for
the ViT, --config.precision=w2a2 ... for the others):
  python -m robustmq_jax.train --config=configs/qat.py:sample \
      --workdir=/tmp/qat_sample

Method (config.quant.method: dorefa, pact, lsq), bits (config.precision)
and BatchNorm folding (config.quant.bn_fold) are fields. The export lands in
DIR/export/<model>/<precision>_<method>; the job ends by printing the main
job's flags that load it (--config.quant.checkpoint_dir=DIR/export and the
config.quant fields that differ from the study configs').

ImageNet recipe: MQBench's academic QAT recipe (REFERENCE §1.4, from
ModelTC/mqbench-paper's qbench_zoo configs): SGD with Nesterov momentum 0.9,
weight decay 1e-4, cosine learning rate with a linear warm-up over 2,500
steps to 0.004, 250k steps, label smoothing 0.1, BatchNorm folded; MQBench
academic quantizers (per-tensor symmetric weights, adaptive-sign per-tensor
activations, first and last layer at 8 bits). Assumptions, where the source
does not say or we differ:
  * global batch 512: MQBench gives 64 per GPU, not the GPU count; 8 GPUs
    assumed (250k steps are then ~100 epochs);
  * warm-up starts at 0, not MQBench's 1e-4 (the recipe has no start
    value; 2,500 of 250k steps);
  * training crops: torchvision's RandomResizedCrop(224) + horizontal flip
    (the usual ImageNet transform; MQBench's exact augmentation is not in
    the reference);
  * LSQ/PACT start from a calibration on 256 training images (min-max
    activations, MSE weights for LSQ), as the main job's QAT does.
"""

import ml_collections

from robustmq_jax import quant
from robustmq_jax.errors import invalid

# Run by the QAT job, not the main job (config_loading.job_of).
JOB = 'robustmq_jax.train'
ARGS = {
    'imagenet': 'ResNet-18 on ImageNet, MQBench recipe, w4a4 LSQ (default)',
    'smoke': 'ResNet-20 on the embedded sample, 60 steps (< 1 min CPU)',
    'sample': 'the shipped sample w4a4 LSQ checkpoint again (~5 min CPU)',
}
SAMPLE_MODELS = ('resnet20_cifar', 'vit_tiny_patch4_32')


def get_config(arg=None):
  arg = arg or 'imagenet'
  if arg not in ARGS:
    raise invalid('config arg', arg, tuple(ARGS))
  sample = arg != 'imagenet'
  c = ml_collections.ConfigDict()
  c.model = 'resnet20_cifar' if sample else 'resnet18'
  c.precision = 'w4a4'
  c.checkpoints = ml_collections.ConfigDict(
      {m: f'checkpoints/sample/{m}/fp32' for m in SAMPLE_MODELS} if sample
      else {'resnet18': 'checkpoints/imagenet/resnet18/fp32'})
  c.data = ml_collections.ConfigDict({
      'source': 'sample' if sample else 'tfds:imagenet2012:validation',
      'train_source': '',   # '' = the train split of source.
      'data_dir': '',       # TFDS data_dir ('' = TFDS default).
      'augment': 'none' if sample else 'random_resized_crop',
      'workers': 0,         # Grain decode processes (0 = threads).
      'num_examples': 0,    # Final evaluation subset (0 = all).
  })
  c.evaluate = True
  c.seed = 0
  c.checkpoint_every = 20 if sample else 1000
  c.keep_checkpoints = 3
  c.stop_after_steps = 0
  c.export_dir = ''
  c.log_every_s = 10.0 if sample else 60.0
  if sample:
    # The sample configs' config.quant: the export fingerprints like the
    # shipped checkpoints/sample/<model>/<precision>_lsq.
    c.quant = quant.default_config('sample')
    if arg == 'smoke':  # Cheaper everywhere: batch 32, a short min-max
      # calibration, no integer-served evaluation.
      c.quant.qat.update(steps=60, batch_size=32)
      c.quant.update(calibration='minmax', num_calib_batches=2,
                     eval_int8=False)
  else:
    c.quant = quant.default_config('robustmq')
    c.quant.method = 'lsq'
    c.quant.qat.update(steps=250_000, batch_size=512, warmup_steps=2_500,
                       pad_crop=0)
  return c
