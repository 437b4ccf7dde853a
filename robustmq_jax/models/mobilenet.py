"""MobileNetV2 (Sandler et al. 2018) in timm's ``mobilenetv2_100`` layout.

Parameter names follow timm's state dict (``.`` between indices turned into
``_``): ``conv_stem``, ``bn1``, ``blocks_{stage}_{i}/...``, ``conv_head``,
``bn2``, ``classifier``. An expanding block holds ``conv_pw`` (1x1 expand),
``bn1``, ``conv_dw`` (3x3 depthwise), ``bn2``, ``conv_pwl`` (1x1 linear
projection), ``bn3``; a block with expansion 1 (timm's
DepthwiseSeparableConv) holds ``conv_dw``, ``bn1``, ``conv_pw``, ``bn2``.
torchvision's ``mobilenet_v2`` (``features.*``, ``classifier.1``) has the
same blocks; `robustmq_jax.checkpoints` converts both. Activations are
ReLU6; the projection is linear; the residual is taken when the stride is 1
and the channels match.
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

# (expansion t, channels c, blocks n, stride s) of the first block per stage.
IMAGENET_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2),
                     (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                     (6, 320, 1, 1))


class InvertedResidual(nn.Module):
  """Expand (1x1) -> depthwise 3x3 -> linear 1x1, residual when it fits."""
  features: int
  strides: int = 1
  expand_ratio: int = 6
  ops: Ops = FLOAT_OPS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    p, ops = self.name, self.ops
    cin = x.shape[-1]
    if self.expand_ratio == 1:
      y = conv(ops, p, 'conv_dw', cin, 3, self.strides, groups=cin)(x)
      y = nn.relu6(bn(train, 'bn1')(y))
      y = conv(ops, p, 'conv_pw', self.features, 1)(y)
      y = bn(train, 'bn2')(y)
    else:
      hidden = cin * self.expand_ratio
      y = conv(ops, p, 'conv_pw', hidden, 1)(x)
      y = nn.relu6(bn(train, 'bn1')(y))
      y = conv(ops, p, 'conv_dw', hidden, 3, self.strides, groups=hidden)(y)
      y = nn.relu6(bn(train, 'bn2')(y))
      y = conv(ops, p, 'conv_pwl', self.features, 1)(y)
      y = bn(train, 'bn3')(y)
    if self.strides == 1 and cin == self.features:
      y = y + x
    return y


class MobileNetV2(nn.Module):
  """MobileNetV2 classifier on [0, 1] NHWC images.

  Attributes:
    num_classes: number of logits.
    settings: (t, c, n, s) per stage (`IMAGENET_SETTINGS`, width 1.0).
    stem_width: stem channels (32).
    stem_stride: stem conv stride (2 on ImageNet, 1 for 32x32 twins).
    head_width: channels of the last 1x1 conv (1280).
    mean: per-channel input mean (applied inside the model).
    std: per-channel input std.
    ops: contraction implementations (float by default).
  """
  num_classes: int
  settings: Sequence[Sequence[int]] = IMAGENET_SETTINGS
  stem_width: int = 32
  stem_stride: int = 2
  head_width: int = 1280
  mean: Sequence[float] = IMAGENET_MEAN
  std: Sequence[float] = IMAGENET_STD
  ops: Ops = FLOAT_OPS

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    ops = self.ops
    x = normalize(images, self.mean, self.std)
    x = conv(ops, '', 'conv_stem', self.stem_width, 3, self.stem_stride,
             first=True)(x)
    x = nn.relu6(bn(train, 'bn1')(x))
    for s, (t, c, n, stride) in enumerate(self.settings):
      for i in range(n):
        x = InvertedResidual(c, stride if i == 0 else 1, t, ops,
                             name=f'blocks_{s}_{i}')(x, train)
    x = conv(ops, '', 'conv_head', self.head_width, 1)(x)
    x = nn.relu6(bn(train, 'bn2')(x))
    x = jnp.mean(x, axis=(1, 2))
    return dense(ops, 'classifier', self.num_classes)(x)
