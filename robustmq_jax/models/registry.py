"""Model names, their architecture settings and the `get_model` factory."""

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn

from robustmq_jax.errors import invalid
from robustmq_jax.models.ops import FLOAT_OPS
from robustmq_jax.models.mobilenet import MobileNetV2
from robustmq_jax.models.ops import Ops
from robustmq_jax.models.regnet import RegNet
from robustmq_jax.models.resnet import ResNet
from robustmq_jax.models.vit import ViT


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  """Static facts about a registered model.

  Attributes:
    name: registry name.
    family: 'resnet', 'regnet', 'mobilenet' or 'vit'.
    image_size: input side the architecture is built for (224 or 32).
    has_batch_stats: True when variables hold a 'batch_stats' collection
      (BatchNorm); ``apply(..., train=True)`` then needs
      ``mutable=['batch_stats']``.
    grouped_convs: True when it has grouped or depthwise convolutions
      (RegNet, MobileNet), which XLA:CPU runs fast only when rewritten
      (`robustmq_jax.xla_cpu`).
  """
  name: str
  family: str
  image_size: int
  has_batch_stats: bool
  grouped_convs: bool


def _resnet(stage_sizes, block, **kw):
  return functools.partial(ResNet, stage_sizes=stage_sizes, block=block, **kw)


def _vit(patch_size, hidden_size, depth, num_heads, mlp_dim):
  return functools.partial(ViT, patch_size=patch_size, hidden_size=hidden_size,
                           depth=depth, num_heads=num_heads, mlp_dim=mlp_dim)


_REGISTRY: dict[str, tuple[ModelInfo, Callable[..., nn.Module]]] = {}


def _register(name: str, family: str, image_size: int,
              factory: Callable[..., nn.Module]) -> None:
  _REGISTRY[name] = (ModelInfo(name, family, image_size, family != 'vit',
                               family in ('regnet', 'mobilenet')), factory)


_register('resnet18', 'resnet', 224, _resnet((2, 2, 2, 2), 'basic'))
_register('resnet50', 'resnet', 224, _resnet((3, 4, 6, 3), 'bottleneck'))
_register('resnet18_cifar', 'resnet', 32,
          _resnet((2, 2, 2, 2), 'basic', stem='cifar'))
_register('resnet20_cifar', 'resnet', 32,
          _resnet((3, 3, 3), 'basic', widths=(16, 32, 64), stem='cifar'))
# ResNet-50's 32x32 twin (configs/robustmq.py:sample): He et al.'s CIFAR
# bottleneck ResNet, 9 * 3 + 2 = 29 layers, about ResNet-20's cost.
_register('resnet29_bottleneck_cifar', 'resnet', 32,
          _resnet((3, 3, 3), 'bottleneck', widths=(16, 32, 64), stem='cifar'))
_register('vit_tiny_patch16_224', 'vit', 224, _vit(16, 192, 12, 3, 768))
_register('vit_small_patch16_224', 'vit', 224, _vit(16, 384, 12, 6, 1536))
_register('vit_base_patch16_224', 'vit', 224, _vit(16, 768, 12, 12, 3072))
# Small enough to train on 32x32 digits on a laptop CPU in minutes.
_register('vit_tiny_patch4_32', 'vit', 32, _vit(4, 96, 4, 3, 192))
# The paper's efficient models (timm regnetx_006, mobilenetv2_100) and their
# 32x32 twins: stride-1 stems, fewer and narrower stages.
_register('regnetx_600mf', 'regnet', 224, functools.partial(RegNet))
# torchvision regnet_x_800mf / timm regnetx_008 (MQBench's other RegNetX).
_register('regnetx_800mf', 'regnet', 224, functools.partial(
    RegNet, depths=(1, 3, 7, 5), widths=(64, 128, 288, 672), group_width=16))
_register('regnetx_cifar', 'regnet', 32, functools.partial(
    RegNet, depths=(1, 2, 2), widths=(32, 64, 128), group_width=16,
    stem_width=16, stem_stride=1, stage_strides=(1, 2, 2)))
_register('mobilenet_v2', 'mobilenet', 224, functools.partial(MobileNetV2))
_register('mobilenet_v2_cifar', 'mobilenet', 32, functools.partial(
    MobileNetV2, settings=((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2),
                           (6, 64, 2, 2), (6, 96, 1, 1)),
    stem_width=16, stem_stride=1, head_width=320))


def _as_tuple(value: Any) -> Any:
  if isinstance(value, (list, tuple)):
    return tuple(_as_tuple(v) for v in value)
  return value


def list_models() -> list[str]:
  """Names accepted by `get_model`, sorted."""
  return sorted(_REGISTRY)


def model_info(name: str) -> ModelInfo:
  """Static facts about model `name`; UserError for an unknown name."""
  if name not in _REGISTRY:
    raise invalid('model', name, list_models())
  return _REGISTRY[name][0]


def get_model(name: str, *, num_classes: int, ops: Ops = FLOAT_OPS,
              **kwargs: Any) -> nn.Module:
  """Builds a registered model.

  Args:
    name: one of `list_models()`.
    num_classes: number of logits.
    ops: contraction implementations (`robustmq_jax.quant` passes its own).
    **kwargs: module field overrides, e.g. ``mean``, ``std``,
      ``gelu_approximate``, ``pool``, ``posemb`` (see `ResNet`, `RegNet`,
      `MobileNetV2`, `ViT`).

  Returns:
    An unbound Flax module; call ``module.apply(variables, images,
    train=False)`` on float32 NHWC images in [0, 1].

  Raises:
    UserError: unknown name or keyword.
  """
  info = model_info(name)
  factory = _REGISTRY[name][1]
  fields = {f.name for f in dataclasses.fields(factory.func)} - {
      'parent', 'name', 'num_classes', 'ops'}
  for key in kwargs:
    if key not in fields:
      raise invalid(f'model_kwargs.{key} (model {info.name!r})', kwargs[key],
                    'keywords ' + ', '.join(sorted(fields)))
  for key, value in kwargs.items():
    # JSON gives lists; module fields must be hashable.
    kwargs[key] = _as_tuple(value)
  return factory(num_classes=num_classes, ops=ops, **kwargs)
