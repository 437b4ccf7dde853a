"""PyTorch state dicts (torchvision, timm) -> our Flax variable trees.

Input: a flat ``{name: np.ndarray}`` state dict (no torch needed here).
Output: nested ``{'params': ..., 'batch_stats': ...}`` dicts of float32 numpy
arrays named as in `robustmq_jax.models`. Every input tensor must be used;
leftovers mean an architecture variant we do not model, reported as a
UserError by `robustmq_jax.checkpoints.convert`.
"""

import re
from typing import Mapping

import numpy as np

from robustmq_jax.errors import UserError

State = Mapping[str, np.ndarray]


def conv_kernel(w: np.ndarray) -> np.ndarray:
  """A PyTorch conv weight as a Flax kernel (grouped ones too)."""
  return np.transpose(w, (2, 3, 1, 0))  # OIHW -> HWIO.


def put_leaf(tree: dict, path: str, value: np.ndarray) -> None:
  """tree[path] = float32 value ('/'-separated); UserError if already set."""
  *parents, leaf = path.split('/')
  for p in parents:
    tree = tree.setdefault(p, {})
  if leaf in tree:
    raise UserError(f'two tensors map to {path!r}; the checkpoint is not a '
                    'plain torchvision/timm model.')
  tree[leaf] = np.asarray(value, np.float32)


# torchvision and timm ResNets share the state-dict names.
_RESNET_MODULE = [
    (re.compile(r'^layer(\d+)\.(\d+)\.downsample\.0$'),
     r'layer\1_\2/downsample_conv'),
    (re.compile(r'^layer(\d+)\.(\d+)\.downsample\.1$'),
     r'layer\1_\2/downsample_bn'),
    (re.compile(r'^layer(\d+)\.(\d+)\.((?:conv|bn)\d)$'), r'layer\1_\2/\3'),
    (re.compile(r'^(conv1|bn1|fc)$'), r'\1'),
]


def resnet_from_torch(state: State) -> tuple[dict, list[str]]:
  """Maps a torchvision/timm ResNet state dict onto our `ResNet` names.

  Args:
    state: flat state dict, numpy values.

  Returns:
    (variables, unused): the variable tree and the input keys not mapped.
  """
  variables = {'params': {}, 'batch_stats': {}}
  unused = []
  for key, value in state.items():
    module, _, leaf = key.rpartition('.')
    if leaf == 'num_batches_tracked':
      continue
    for pattern, repl in _RESNET_MODULE:
      if pattern.match(module):
        path = pattern.sub(repl, module)
        break
    else:
      unused.append(key)
      continue
    name = path.rsplit('/', 1)[-1]
    is_bn = name.startswith('bn') or name == 'downsample_bn'
    if leaf == 'weight' and value.ndim == 4:
      put_leaf(variables['params'], f'{path}/kernel', conv_kernel(value))
    elif leaf == 'weight' and name == 'fc':
      put_leaf(variables['params'], 'fc/kernel', value.T)
    elif leaf == 'bias' and name == 'fc':
      put_leaf(variables['params'], 'fc/bias', value)
    elif is_bn and leaf in ('weight', 'bias'):
      flax_leaf = 'scale' if leaf == 'weight' else 'bias'
      put_leaf(variables['params'], f'{path}/{flax_leaf}', value)
    elif is_bn and leaf in ('running_mean', 'running_var'):
      put_leaf(variables['batch_stats'], f'{path}/{leaf[len("running_"):]}',
           value)
    else:
      unused.append(key)
  return variables, unused


def vit_from_timm(state: State, num_heads: int) -> tuple[dict, list[str]]:
  """Maps a timm `VisionTransformer` state dict onto our `ViT` names.

  Follows REFERENCE §11.2: fused qkv is split and reshaped to the
  DenseGeneral (D, heads, head_dim) layout, the output projection to
  (heads, head_dim, D); linear weights are transposed.

  Args:
    state: flat state dict, numpy values.
    num_heads: attention heads of the target architecture.

  Returns:
    (variables, unused): the variable tree and the input keys not mapped.
  """
  params = {}
  unused = []
  block_re = re.compile(r'^blocks\.(\d+)\.(.+)$')
  simple = {
      'norm1.weight': 'LayerNorm_0/scale', 'norm1.bias': 'LayerNorm_0/bias',
      'norm2.weight': 'LayerNorm_2/scale', 'norm2.bias': 'LayerNorm_2/bias',
      'mlp.fc1.bias': 'MlpBlock_3/Dense_0/bias',
      'mlp.fc2.bias': 'MlpBlock_3/Dense_1/bias',
  }
  for key, value in state.items():
    m = block_re.match(key)
    if key == 'cls_token':
      put_leaf(params, 'cls', value)
    elif key == 'pos_embed':
      put_leaf(params, 'Transformer/posembed_input/pos_embedding', value)
    elif key == 'patch_embed.proj.weight':
      put_leaf(params, 'embedding/kernel', conv_kernel(value))
    elif key == 'patch_embed.proj.bias':
      put_leaf(params, 'embedding/bias', value)
    elif key in ('norm.weight', 'norm.bias'):
      leaf = 'scale' if key.endswith('weight') else 'bias'
      put_leaf(params, f'Transformer/encoder_norm/{leaf}', value)
    elif key == 'head.weight':
      put_leaf(params, 'head/kernel', value.T)
    elif key == 'head.bias':
      put_leaf(params, 'head/bias', value)
    elif m:
      block = f'Transformer/encoderblock_{m.group(1)}'
      attn = f'{block}/MultiHeadDotProductAttention_1'
      rest = m.group(2)
      width = value.shape[-1] if value.ndim == 2 else value.shape[0] // 3
      head_dim = width // num_heads
      if rest in simple:
        put_leaf(params, f'{block}/{simple[rest]}', value)
      elif rest == 'mlp.fc1.weight':
        put_leaf(params, f'{block}/MlpBlock_3/Dense_0/kernel', value.T)
      elif rest == 'mlp.fc2.weight':
        put_leaf(params, f'{block}/MlpBlock_3/Dense_1/kernel', value.T)
      elif rest == 'attn.qkv.weight':  # (3D, D): rows are (qkv, head, dim).
        for name, w in zip(('query', 'key', 'value'), np.split(value, 3)):
          put_leaf(params, f'{attn}/{name}/kernel',
               w.T.reshape(width, num_heads, head_dim))
      elif rest == 'attn.qkv.bias':
        for name, b in zip(('query', 'key', 'value'), np.split(value, 3)):
          put_leaf(params, f'{attn}/{name}/bias',
                   b.reshape(num_heads, head_dim))
      elif rest == 'attn.proj.weight':  # Input channels are (head, dim).
        put_leaf(params, f'{attn}/out/kernel',
             value.T.reshape(num_heads, head_dim, width))
      elif rest == 'attn.proj.bias':
        put_leaf(params, f'{attn}/out/bias', value)
      else:
        unused.append(key)
    else:
      unused.append(key)
  return {'params': params}, unused
