"""ResNets in the torchvision layout (ImageNet) and He et al.'s CIFAR layout.

Parameter names mirror torchvision's state dict so conversion is mechanical:
``conv1``, ``bn1``, ``layer{s}_{i}/{conv1,bn1,conv2,bn2[,conv3,bn3]}``,
``layer{s}_{i}/downsample_conv``, ``layer{s}_{i}/downsample_bn`` and ``fc``.
All paddings are explicit (PyTorch semantics); Flax's 'SAME' would pad
stride-2 convolutions asymmetrically and break converted weights.
Bottlenecks are "v1.5" (stride on the 3x3 convolution), as in torchvision.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from robustmq_jax.models.layers import bn
from robustmq_jax.models.layers import conv
from robustmq_jax.models.layers import dense
from robustmq_jax.models.normalize import IMAGENET_MEAN
from robustmq_jax.models.normalize import IMAGENET_STD
from robustmq_jax.models.normalize import normalize
from robustmq_jax.models.ops import FLOAT_OPS
from robustmq_jax.models.ops import Ops

class BasicBlock(nn.Module):
  """Two 3x3 convolutions with a residual (ResNet-18/34, CIFAR ResNets)."""
  features: int
  strides: int = 1
  ops: Ops = FLOAT_OPS

  expansion = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    p, ops = self.name, self.ops
    y = conv(ops, p, 'conv1', self.features, 3, self.strides)(x)
    y = nn.relu(bn(train, 'bn1')(y))
    y = conv(ops, p, 'conv2', self.features, 3)(y)
    y = bn(train, 'bn2')(y)
    return nn.relu(y + _shortcut(x, self.features, self.strides, ops, p,
                                 train))


class Bottleneck(nn.Module):
  """1x1 -> 3x3 (strided, v1.5) -> 1x1 x4 bottleneck (ResNet-50)."""
  features: int
  strides: int = 1
  ops: Ops = FLOAT_OPS

  expansion = 4

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    p, ops = self.name, self.ops
    y = conv(ops, p, 'conv1', self.features, 1)(x)
    y = nn.relu(bn(train, 'bn1')(y))
    y = conv(ops, p, 'conv2', self.features, 3, self.strides)(y)
    y = nn.relu(bn(train, 'bn2')(y))
    y = conv(ops, p, 'conv3', self.features * 4, 1)(y)
    y = bn(train, 'bn3')(y)
    return nn.relu(y + _shortcut(x, self.features * 4, self.strides, ops, p,
                                 train))


def _shortcut(x: jax.Array, features: int, strides: int, ops: Ops,
              prefix: str, train: bool) -> jax.Array:
  """Identity, or a 1x1 projection + BN when the shape changes.

  Called from inside the block's compact method, so the submodules belong to
  the block.
  """
  if strides == 1 and x.shape[-1] == features:
    return x
  y = conv(ops, prefix, 'downsample_conv', features, 1, strides)(x)
  return bn(train, 'downsample_bn')(y)


_BLOCKS = {'basic': BasicBlock, 'bottleneck': Bottleneck}


class ResNet(nn.Module):
  """ResNet classifier on [0, 1] NHWC images.

  Attributes:
    num_classes: number of logits.
    stage_sizes: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
    block: 'basic' or 'bottleneck'.
    widths: base width of each stage; the stem has widths[0] channels.
    stem: 'imagenet' (7x7/2 conv + 3x3/2 max-pool) or 'cifar' (3x3/1 conv).
    mean: per-channel input mean (applied inside the model).
    std: per-channel input std.
    ops: contraction implementations (float by default).
  """
  num_classes: int
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  block: str = 'basic'
  widths: Sequence[int] = (64, 128, 256, 512)
  stem: str = 'imagenet'
  mean: Sequence[float] = IMAGENET_MEAN
  std: Sequence[float] = IMAGENET_STD
  ops: Ops = FLOAT_OPS

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    ops = self.ops
    x = normalize(images, self.mean, self.std)
    if self.stem == 'imagenet':
      x = conv(ops, '', 'conv1', self.widths[0], 7, 2, first=True)(x)
      x = nn.relu(bn(train, 'bn1')(x))
      # Flax pads max-pool windows with -inf, as PyTorch does.
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    elif self.stem == 'cifar':
      x = conv(ops, '', 'conv1', self.widths[0], 3, 1, first=True)(x)
      x = nn.relu(bn(train, 'bn1')(x))
    else:
      raise ValueError(f'unknown stem {self.stem!r}')
    block_cls = _BLOCKS[self.block]
    for s, (n, width) in enumerate(zip(self.stage_sizes, self.widths)):
      for i in range(n):
        strides = 2 if (s > 0 and i == 0) else 1
        x = block_cls(width, strides, ops, name=f'layer{s + 1}_{i}')(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return dense(ops, 'fc', self.num_classes)(x)
