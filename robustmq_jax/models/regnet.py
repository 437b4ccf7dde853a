"""RegNetX (Radosavovic et al. 2020) in timm's ``regnetx_*`` layout.

Parameter names follow timm's state dict with ``.`` between indices turned
into ``_`` (as the ResNets here do with torchvision's): ``stem_conv``,
``stem_bn``, ``s{stage}_b{block}/{conv1,bn1,conv2,bn2,conv3,bn3}``,
``s{stage}_b{block}/downsample_{conv,bn}`` and ``fc`` (timm ``head.fc``).
torchvision's RegNets (``stem.0``, ``trunk_output.block1.block1-0.f.a.0``,
...) have the same blocks; `robustmq_jax.checkpoints` converts both.

An X block: 1x1 conv -> 3x3 grouped conv (group width `group_width`, stride
on the first block of a stage) -> 1x1 conv, each with BN, ReLU after the
first two and after the residual add; a 1x1 conv + BN projects the shortcut
when the shape changes. Bottleneck ratio 1, no squeeze-excitation.
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


class XBlock(nn.Module):
  """RegNet X block (residual bottleneck with a grouped 3x3 conv)."""
  features: int
  strides: int = 1
  group_width: int = 24
  ops: Ops = FLOAT_OPS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    p, ops, f = self.name, self.ops, self.features
    if f % self.group_width:
      raise ValueError(f'{p}: width {f} is not a multiple of the group '
                       f'width {self.group_width}')
    y = conv(ops, p, 'conv1', f, 1)(x)
    y = nn.relu(bn(train, 'bn1')(y))
    y = conv(ops, p, 'conv2', f, 3, self.strides,
             groups=f // self.group_width)(y)
    y = nn.relu(bn(train, 'bn2')(y))
    y = conv(ops, p, 'conv3', f, 1)(y)
    y = bn(train, 'bn3')(y)
    if self.strides != 1 or x.shape[-1] != f:
      x = conv(ops, p, 'downsample_conv', f, 1, self.strides)(x)
      x = bn(train, 'downsample_bn')(x)
    return nn.relu(y + x)


class RegNet(nn.Module):
  """RegNetX classifier on [0, 1] NHWC images.

  Attributes:
    num_classes: number of logits.
    depths: blocks per stage ((1, 3, 5, 7) for RegNetX-600MF).
    widths: output channels per stage ((48, 96, 240, 528)).
    group_width: channels per group of the 3x3 convs (24).
    stem_width: stem channels (32).
    stem_stride: stem conv stride (2 on ImageNet, 1 for 32x32 twins).
    stage_strides: stride of each stage's first block (2 everywhere on
      ImageNet).
    mean: per-channel input mean (applied inside the model).
    std: per-channel input std.
    ops: contraction implementations (float by default).
  """
  num_classes: int
  depths: Sequence[int] = (1, 3, 5, 7)
  widths: Sequence[int] = (48, 96, 240, 528)
  group_width: int = 24
  stem_width: int = 32
  stem_stride: int = 2
  stage_strides: Sequence[int] = (2, 2, 2, 2)
  mean: Sequence[float] = IMAGENET_MEAN
  std: Sequence[float] = IMAGENET_STD
  ops: Ops = FLOAT_OPS

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    ops = self.ops
    if not len(self.depths) == len(self.widths) == len(self.stage_strides):
      raise ValueError('depths, widths and stage_strides differ in length')
    x = normalize(images, self.mean, self.std)
    x = conv(ops, '', 'stem_conv', self.stem_width, 3, self.stem_stride,
             first=True)(x)
    x = nn.relu(bn(train, 'stem_bn')(x))
    for s, (n, width, stride) in enumerate(
        zip(self.depths, self.widths, self.stage_strides)):
      for i in range(n):
        x = XBlock(width, stride if i == 0 else 1, self.group_width, ops,
                   name=f's{s + 1}_b{i + 1}')(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return dense(ops, 'fc', self.num_classes)(x)
