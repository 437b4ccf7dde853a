r"""RobustMQ study of a ResNet at 4 bits (and the float baseline).

ImageNet (ResNet-18, converted torchvision checkpoint in checkpoints/imagenet/):
  python -m robustmq_jax.main --config=configs/resnet18_w4.py \
      --workdir=/tmp/resnet18_w4 --config.data.data_dir=$TFDS_DATA_DIR

Embedded sample (CIFAR-style ResNet-20, fp32/w8a8/w6a6/w4a4/w2a2):
  python -m robustmq_jax.main --config=configs/resnet18_w4.py:sample \
      --workdir=/tmp/robustmq_resnet
"""

from robustmq_jax import study

ARGS = study.ARGS


def get_config(arg=None):
  return study.study_config(
      arg, imagenet_model='resnet18', sample_model='resnet20_cifar',
      imagenet_precisions=('fp32', 'w4a4'))
