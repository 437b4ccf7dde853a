"""Flax image classifiers on [0, 1] NHWC inputs (normalisation inside).

`get_model(name, num_classes=..., ops=...)` builds a registered model;
`list_models()` names them and `model_info(name)` gives static facts. Models
route every contraction through `robustmq_jax.models.ops.Ops`, the seam that
quantization overrides.
"""

from robustmq_jax.models.mobilenet import MobileNetV2
from robustmq_jax.models.ops import FLOAT_OPS
from robustmq_jax.models.ops import Ops
from robustmq_jax.models.ops import Role
from robustmq_jax.models.regnet import RegNet
from robustmq_jax.models.registry import get_model
from robustmq_jax.models.registry import list_models
from robustmq_jax.models.registry import model_info
from robustmq_jax.models.registry import ModelInfo
from robustmq_jax.models.resnet import ResNet
from robustmq_jax.models.vit import ViT
