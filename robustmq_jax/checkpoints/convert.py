"""Pretrained weights (torchvision, timm, big_vision) -> our checkpoint format.

`convert(family, arch, source)` maps a PyTorch state dict or a Google ViT npz
onto a `robustmq_jax.models` architecture and returns what
`robustmq_jax.checkpoints.save` needs; `convert_file` reads a file and writes
the checkpoint folder (`scripts/convert_weights.py` is its command line).
Nothing here downloads: fetch the weights yourself (checkpoints/README.md).

Input normalisation and the GELU flavour are part of the result
(``model_kwargs``), so the converted model takes [0, 1] images:

| family                 | mean / std                         | GELU  |
|------------------------|------------------------------------|-------|
| torchvision            | ImageNet (0.485, ...)/(0.229, ...) | -     |
| timm ResNet, RegNetX,  | ImageNet                           | -     |
| MobileNetV2            |                                    |       |
| timm ViT               | 0.5 / 0.5 (AugReg default weights) | exact |
| big_vision             | 0.5 / 0.5 (inputs in [-1, 1])      | tanh  |

Files are read without unpickling arbitrary objects: ``.npz`` with
``allow_pickle=False``, ``.safetensors`` with safetensors, ``.pth``/``.pt``/
``.bin`` with ``torch.load(weights_only=True)``.
"""

import json
import os
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from robustmq_jax import models
from robustmq_jax.checkpoints import convert_cnn
from robustmq_jax.checkpoints import io
from robustmq_jax.checkpoints.convert_npz import vit_from_npz
from robustmq_jax.checkpoints.convert_torch import resnet_from_torch
from robustmq_jax.checkpoints.convert_torch import vit_from_timm
from robustmq_jax.errors import invalid
from robustmq_jax.errors import UserError
from robustmq_jax.models.normalize import HALF_MEAN
from robustmq_jax.models.normalize import HALF_STD
from robustmq_jax.models.normalize import IMAGENET_MEAN
from robustmq_jax.models.normalize import IMAGENET_STD

_VITS = ('vit_tiny_patch16_224', 'vit_small_patch16_224',
         'vit_base_patch16_224')
_CNNS = ('regnetx_600mf', 'regnetx_800mf', 'mobilenet_v2')
ARCHS: dict[str, tuple[str, ...]] = {
    'torchvision': ('resnet18', 'resnet50') + _CNNS,
    'timm': ('resnet18', 'resnet50') + _CNNS + _VITS,
    'big_vision': _VITS,
}
# The classifier of each model family (its kernel gives num_classes).
_HEADS = {'resnet': 'fc', 'regnet': 'fc', 'mobilenet': 'classifier',
          'vit': 'head'}
FAMILIES = tuple(ARCHS)


def convert(family: str, arch: str, source: Mapping[str, Any], *,
            mean: Sequence[float] | None = None,
            std: Sequence[float] | None = None,
            gelu_approximate: bool | None = None,
            ) -> tuple[str, dict, dict[str, Any]]:
  """Converts pretrained weights to our variables.

  Args:
    family: 'torchvision', 'timm' or 'big_vision'.
    arch: target model name (see `ARCHS[family]`).
    source: a PyTorch state dict (tensors or arrays) for torchvision/timm, or
      the flat npz contents for big_vision.
    mean: input mean override (default per family, see module docstring).
    std: input std override.
    gelu_approximate: GELU override for ViTs (default per family).

  Returns:
    (model_name, variables, model_kwargs) with ``variables`` a nested dict of
    float32 numpy arrays that `models.get_model(model_name,
    num_classes=..., **model_kwargs)` accepts.

  Raises:
    UserError: unknown family/arch, or weights that do not fit the arch.
  """
  if family not in ARCHS:
    raise invalid('family', family, FAMILIES)
  if arch not in ARCHS[family]:
    raise invalid('arch', arch, ARCHS[family])
  arrays = {k: _to_numpy(v) for k, v in source.items()}
  arrays = {k: v for k, v in arrays.items() if v is not None}
  info = models.model_info(arch)
  kwargs: dict[str, Any] = {}
  if info.family != 'vit':
    state = {k[len('module.'):] if k.startswith('module.') else k: v
             for k, v in arrays.items()}
    if info.family == 'resnet':
      variables, unused = resnet_from_torch(state)
    else:
      variables, unused = convert_cnn.cnn_from_torch(
          state, _cnn_rules(family, arch))
    kwargs.update(mean=IMAGENET_MEAN, std=IMAGENET_STD)
  else:
    heads = models.get_model(arch, num_classes=1).num_heads
    if family == 'timm':
      variables, unused = vit_from_timm(arrays, heads)
      kwargs.update(mean=HALF_MEAN, std=HALF_STD, gelu_approximate=False)
    else:
      depth = models.get_model(arch, num_classes=1).depth
      variables, implied, unused = vit_from_npz(
          arrays, image_size=info.image_size, depth=depth)
      kwargs.update(mean=HALF_MEAN, std=HALF_STD, gelu_approximate=True)
      kwargs.update(implied)
  if mean is not None:
    kwargs['mean'] = tuple(float(m) for m in mean)
  if std is not None:
    kwargs['std'] = tuple(float(s) for s in std)
  if gelu_approximate is not None and info.family == 'vit':
    kwargs['gelu_approximate'] = bool(gelu_approximate)
  if unused:
    raise UserError(
        f'input has {len(unused)} tensors that arch={arch!r} does not use '
        f'(e.g. {", ".join(sorted(unused)[:3])}); it is a different '
        'architecture or variant.')
  num_classes = num_classes_of(arch, variables)
  _check_tree(arch, num_classes, kwargs, variables)
  return arch, variables, kwargs


def _cnn_rules(family: str, arch: str) -> convert_cnn.Rules:
  """Module-renaming rules of a RegNet / MobileNetV2 source layout."""
  if models.model_info(arch).family == 'regnet':
    return (convert_cnn.REGNET_TIMM if family == 'timm' else
            convert_cnn.REGNET_TORCHVISION)
  if family == 'timm':
    return convert_cnn.MOBILENET_TIMM
  settings = models.get_model(arch, num_classes=1).settings
  return convert_cnn.mobilenet_torchvision_rules(settings)


def num_classes_of(arch: str, variables: Mapping[str, Any]) -> int:
  """Number of logits of converted `variables` (from the head's kernel)."""
  head_name = _HEADS[models.model_info(arch).family]
  head = variables['params'].get(head_name)
  if not head or 'kernel' not in head:
    raise UserError(f'input has no classifier head for arch={arch!r}; '
                    'convert a full classification checkpoint.')
  return int(head['kernel'].shape[-1])


def _to_numpy(value: Any) -> np.ndarray | None:
  """Tensors/arrays -> float32 numpy; None for non-array entries."""
  if hasattr(value, 'detach'):  # torch.Tensor (bf16 has no numpy dtype).
    value = value.detach().cpu()
    if value.is_floating_point():
      value = value.float()
    return value.numpy()
  if isinstance(value, (np.ndarray, jax.Array)):
    return np.asarray(value)
  return None


def _check_tree(arch: str, num_classes: int, kwargs: dict,
                variables: dict) -> None:
  """UserError unless `variables` has exactly the model's names and shapes."""
  module = models.get_model(arch, num_classes=num_classes, **kwargs)
  size = models.model_info(arch).image_size
  expected = jax.eval_shape(module.init, jax.random.key(0),
                            jax.ShapeDtypeStruct((1, size, size, 3),
                                                 jnp.float32))
  want = _shapes(expected)
  got = _shapes(variables)
  missing = sorted(set(want) - set(got))
  extra = sorted(set(got) - set(want))
  wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])
  if missing or extra or wrong:
    parts = []
    if missing:
      parts.append(f'{len(missing)} missing (e.g. {missing[0]})')
    if extra:
      parts.append(f'{len(extra)} unexpected (e.g. {extra[0]})')
    if wrong:
      k = wrong[0]
      parts.append(f'{len(wrong)} with wrong shapes (e.g. {k}: {got[k]} vs '
                   f'{want[k]})')
    raise UserError(f'input does not fit arch={arch!r}: '
                    f'{"; ".join(parts)} tensors.')


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): tuple(v.shape)
          for path, v in jax.tree_util.tree_leaves_with_path(tree)}


def read_weights(path: str) -> dict[str, np.ndarray]:
  """Reads a state dict (.pth/.pt/.bin/.safetensors) or npz as numpy arrays.

  Raises:
    UserError: missing, unreadable or pickled-object files.
  """
  if not os.path.isfile(path):
    raise UserError(f'input={path!r} does not exist or is not a file.')
  ext = os.path.splitext(path)[1].lower()
  try:
    if ext == '.npz':
      with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
    if ext == '.safetensors':
      import safetensors.numpy  # pylint: disable=g-import-not-at-top
      return safetensors.numpy.load_file(path)
  except (OSError, ValueError) as e:
    raise UserError(f'input={path!r} could not be read as {ext} '
                    f'({type(e).__name__}: {e}).') from e
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise UserError(f'input={path!r} is a PyTorch file; reading it needs '
                    'torch (pip install torch), or convert a .safetensors '
                    'file instead.') from e
  try:
    obj = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(
        f'input={path!r} could not be read with torch.load(weights_only='
        f'True) ({type(e).__name__}); save model.state_dict(), not the whole '
        'model.') from e
  for key in ('state_dict', 'model', 'model_state_dict'):
    if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
      obj = obj[key]  # Training checkpoints wrap the state dict.
  if not isinstance(obj, Mapping):
    raise UserError(f'input={path!r} holds a {type(obj).__name__}, not a '
                    'state dict.')
  arrays = {k: _to_numpy(v) for k, v in obj.items()}
  return {k: v for k, v in arrays.items() if v is not None}


def _hub_normalisation(path: str) -> dict[str, tuple[float, ...]]:
  """mean/std from a Hugging Face timm ``config.json`` next to `path`."""
  cfg_path = os.path.join(os.path.dirname(os.path.abspath(path)),
                          'config.json')
  try:
    with open(cfg_path) as f:
      cfg = json.load(f).get('pretrained_cfg', {})
  except (OSError, ValueError, AttributeError):
    return {}
  out = {}
  for key in ('mean', 'std'):
    if isinstance(cfg.get(key), list) and len(cfg[key]) == 3:
      out[key] = tuple(float(v) for v in cfg[key])
  return out


def convert_file(family: str, arch: str, input_path: str, output_dir: str, *,
                 mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None,
                 gelu_approximate: bool | None = None) -> dict[str, Any]:
  """Reads `input_path`, converts it and saves a checkpoint in `output_dir`.

  For timm, a Hugging Face ``config.json`` beside the input supplies mean/std
  (unless given).

  Returns:
    The saved model.json contents.
  """
  if family not in ARCHS:
    raise invalid('family', family, FAMILIES)
  if arch not in ARCHS[family]:
    raise invalid('arch', arch, ARCHS[family])
  arrays = read_weights(input_path)
  if family == 'timm':
    hub = _hub_normalisation(input_path)
    mean = hub.get('mean') if mean is None else mean
    std = hub.get('std') if std is None else std
  name, variables, kwargs = convert(family, arch, arrays, mean=mean, std=std,
                                    gelu_approximate=gelu_approximate)
  num_classes = num_classes_of(name, variables)
  meta = {'source_family': family,
          'source_file': os.path.basename(input_path),
          'converted_by': 'scripts/convert_weights.py'}
  io.save(output_dir, model=name, num_classes=num_classes,
          variables=variables, model_kwargs=kwargs, meta=meta)
  return io.read_spec(output_dir)
