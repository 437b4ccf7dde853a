r"""RobustMQ study of a ViT at 4 bits (and the float baseline).

ImageNet (ViT-S/16, converted checkpoint in checkpoints/imagenet/):
  python -m robustmq_jax.main --config=configs/vit_w4.py --workdir=/tmp/vit_w4 \
      --config.data.data_dir=$TFDS_DATA_DIR

Embedded sample (small ViT, fp32/w8a8/w6a6/w4a4/w2a2; the README quickstart):
  python -m robustmq_jax.main --config=configs/vit_w4.py:sample \
      --workdir=/tmp/robustmq
"""

from robustmq_jax import study

ARGS = study.ARGS


def get_config(arg=None):
  return study.study_config(
      arg, imagenet_model='vit_small_patch16_224',
      sample_model='vit_tiny_patch4_32', imagenet_precisions=('fp32', 'w4a4'))
