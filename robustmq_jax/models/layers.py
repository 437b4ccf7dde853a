"""Convolution and BatchNorm builders shared by the CNNs (PyTorch semantics).

Every convolution is an `nn.Conv` whose `conv_general_dilated_cls` comes from
the `Ops` seam, with explicit symmetric padding (kernel // 2 on each side,
PyTorch's convention; Flax's 'SAME' pads stride-2 convolutions
asymmetrically and would break converted weights). Grouped and depthwise
convolutions set ``feature_group_count``: a PyTorch weight (O, I/G, kh, kw)
is a Flax kernel (kh, kw, I/G, O).
"""

import flax.linen as nn

from robustmq_jax.models.ops import Ops
from robustmq_jax.models.ops import Role

# torchvision / timm: kaiming_normal_(mode='fan_out', nonlinearity='relu').
CONV_INIT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def conv(ops: Ops, prefix: str, name: str, features: int, kernel: int,
         strides: int = 1, groups: int = 1, first: bool = False) -> nn.Conv:
  """A bias-free conv routed through `ops`, its Role named after its path.

  Args:
    ops: contraction implementations.
    prefix: module path of the calling module ('' at the top level).
    name: the conv's module name.
    features: output channels.
    kernel: square kernel side.
    strides: stride.
    groups: ``feature_group_count`` (input channels for a depthwise conv).
    first: the model's first contraction (kept at 8 bits by the quantizer).

  Returns:
    The unbound `nn.Conv`, to be called inside a compact method.
  """
  pad = kernel // 2
  path = f'{prefix}/{name}' if prefix else name
  return nn.Conv(
      features, (kernel, kernel), strides=(strides, strides),
      padding=((pad, pad), (pad, pad)), feature_group_count=groups,
      use_bias=False, kernel_init=CONV_INIT,
      conv_general_dilated_cls=ops.conv_general_dilated_cls(
          Role(path, 'conv', first=first)),
      name=name)


def bn(train: bool, name: str) -> nn.BatchNorm:
  """BatchNorm with PyTorch's defaults (momentum 0.1 == Flax 0.9, eps 1e-5)."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                      epsilon=1e-5, name=name)


def dense(ops: Ops, name: str, features: int, last: bool = True) -> nn.Dense:
  """The classifier `nn.Dense` routed through `ops`."""
  return nn.Dense(features, name=name,
                  dot_general_cls=ops.dot_general_cls(
                      Role(name, 'dense', last=last)))
