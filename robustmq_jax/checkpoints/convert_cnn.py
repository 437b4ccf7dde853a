"""torchvision / timm RegNetX and MobileNetV2 state dicts -> our Flax names.

Both families map module by module through a list of regular expressions
(PyTorch module path -> our Flax module path); the leaf then follows from
the target: a 4-D ``weight`` is a conv kernel (OIHW -> HWIO, grouped and
depthwise kernels included: (O, I/G, kh, kw) -> (kh, kw, I/G, O)), a 2-D
``weight`` of the classifier is a Dense kernel (transposed), and a target
whose last component is ``bn*`` / ``*_bn`` is a BatchNorm (``weight`` ->
``scale``, ``running_mean`` / ``running_var`` -> ``batch_stats``).

Layouts (source -> ours):

  timm regnetx_*        stem.conv / stem.bn        -> stem_conv / stem_bn
                        s1.b1.conv1.conv / .bn     -> s1_b1/conv1 / bn1
                        s1.b1.downsample.conv/.bn  -> s1_b1/downsample_conv/_bn
                        head.fc                    -> fc
  torchvision regnet_x  stem.0 / stem.1            -> stem_conv / stem_bn
                        trunk_output.block1.block1-0.f.a.0 / .1
                                                   -> s1_b1/conv1 / bn1 (b: 2,
                                                      c: 3)
                        ...block1-0.proj.0 / .1    -> s1_b1/downsample_conv/_bn
                        fc                         -> fc
  timm mobilenetv2_*    conv_stem, bn1, blocks.S.I.X, conv_head, bn2,
                        classifier                 -> same, blocks_S_I/X
  torchvision           features.0.0 / .1          -> conv_stem / bn1
  mobilenet_v2          features.K.conv.*          -> blocks_S_I/... (K counts
                                                      blocks in order)
                        features.LAST.0 / .1       -> conv_head / bn2
                        classifier.1               -> classifier
"""

import re
from typing import Sequence

import numpy as np

from robustmq_jax.checkpoints.convert_torch import State
from robustmq_jax.checkpoints.convert_torch import conv_kernel
from robustmq_jax.checkpoints.convert_torch import put_leaf

Rules = list[tuple[re.Pattern, str]]
_BN_RE = re.compile(r'(^|_)bn\d*$')

REGNET_TIMM: Rules = [
    (re.compile(r'^stem\.(conv|bn)$'), r'stem_\1'),
    (re.compile(r'^s(\d+)\.b(\d+)\.conv(\d)\.conv$'), r's\1_b\2/conv\3'),
    (re.compile(r'^s(\d+)\.b(\d+)\.conv(\d)\.bn$'), r's\1_b\2/bn\3'),
    (re.compile(r'^s(\d+)\.b(\d+)\.downsample\.(conv|bn)$'),
     r's\1_b\2/downsample_\3'),
    (re.compile(r'^head\.fc$'), 'fc'),
]


def _tv_regnet_block(m: re.Match) -> str:
  stage, index, rest = m.group(1), int(m.group(2)), m.group(3)
  name = {'f.a.0': 'conv1', 'f.a.1': 'bn1', 'f.b.0': 'conv2', 'f.b.1': 'bn2',
          'f.c.0': 'conv3', 'f.c.1': 'bn3', 'proj.0': 'downsample_conv',
          'proj.1': 'downsample_bn'}.get(rest)
  return '' if name is None else f's{stage}_b{index + 1}/{name}'


REGNET_TORCHVISION: Rules = [
    (re.compile(r'^stem\.0$'), 'stem_conv'),
    (re.compile(r'^stem\.1$'), 'stem_bn'),
    (re.compile(r'^trunk_output\.block(\d+)\.block\1-(\d+)\.(.+)$'),
     _tv_regnet_block),
    (re.compile(r'^fc$'), 'fc'),
]

MOBILENET_TIMM: Rules = [
    (re.compile(r'^(conv_stem|bn1|conv_head|bn2|classifier)$'), r'\1'),
    (re.compile(r'^blocks\.(\d+)\.(\d+)\.(conv_pw|conv_dw|conv_pwl|bn\d)$'),
     r'blocks_\1_\2/\3'),
]


def mobilenet_torchvision_rules(settings: Sequence[Sequence[int]]) -> Rules:
  """Rules for torchvision's `mobilenet_v2` with the given (t, c, n, s)."""
  blocks = [(s, i, t) for s, (t, _, n, _) in enumerate(settings)
            for i in range(n)]
  last = len(blocks) + 1

  def block(m: re.Match) -> str:
    k, rest = int(m.group(1)), m.group(2)
    if not 1 <= k <= len(blocks):
      return ''
    s, i, t = blocks[k - 1]
    if t == 1:  # dw (ConvBNReLU), pw conv, bn.
      names = {'0.0': 'conv_dw', '0.1': 'bn1', '1': 'conv_pw', '2': 'bn2'}
    else:  # pw (ConvBNReLU), dw (ConvBNReLU), pwl conv, bn.
      names = {'0.0': 'conv_pw', '0.1': 'bn1', '1.0': 'conv_dw',
               '1.1': 'bn2', '2': 'conv_pwl', '3': 'bn3'}
    name = names.get(rest)
    return '' if name is None else f'blocks_{s}_{i}/{name}'

  return [
      (re.compile(r'^features\.0\.0$'), 'conv_stem'),
      (re.compile(r'^features\.0\.1$'), 'bn1'),
      (re.compile(rf'^features\.{last}\.0$'), 'conv_head'),
      (re.compile(rf'^features\.{last}\.1$'), 'bn2'),
      (re.compile(r'^features\.(\d+)\.conv\.(.+)$'), block),
      (re.compile(r'^classifier\.1$'), 'classifier'),
  ]


def _target(module: str, rules: Rules) -> str:
  for pattern, repl in rules:
    m = pattern.match(module)
    if m:
      return repl(m) if callable(repl) else m.expand(repl)
  return ''


def cnn_from_torch(state: State, rules: Rules) -> tuple[dict, list[str]]:
  """Maps a CNN state dict onto our names with module `rules`.

  Args:
    state: flat state dict, numpy values.
    rules: (pattern, replacement) pairs on the PyTorch module path (the key
      without its last component); the replacement is a `re` template or a
      function of the match returning the Flax module path ('' = no match).

  Returns:
    (variables, unused): the ``{'params', 'batch_stats'}`` tree and the input
    keys not mapped.
  """
  variables = {'params': {}, 'batch_stats': {}}
  unused = []
  for key, value in state.items():
    module, _, leaf = key.rpartition('.')
    if leaf == 'num_batches_tracked':
      continue
    path = _target(module, rules)
    if not path:
      unused.append(key)
      continue
    if _BN_RE.search(path.rsplit('/', 1)[-1]):
      if leaf in ('weight', 'bias'):
        flax_leaf = 'scale' if leaf == 'weight' else 'bias'
        put_leaf(variables['params'], f'{path}/{flax_leaf}', value)
      elif leaf in ('running_mean', 'running_var'):
        put_leaf(variables['batch_stats'], f'{path}/{leaf[len("running_"):]}',
             value)
      else:
        unused.append(key)
    elif leaf == 'weight' and value.ndim == 4:
      put_leaf(variables['params'], f'{path}/kernel', conv_kernel(value))
    elif leaf == 'weight' and value.ndim == 2:
      put_leaf(variables['params'], f'{path}/kernel', np.asarray(value).T)
    elif leaf == 'bias' and value.ndim == 1:
      put_leaf(variables['params'], f'{path}/bias', value)
    else:
      unused.append(key)
  return variables, unused
