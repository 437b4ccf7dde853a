"""Google ViT .npz checkpoints (vision_transformer, big_vision) -> our ViT.

Our `ViT` keeps the google-research/vision_transformer names, so most tensors
copy by name. The differences this module absorbs:

* Key prefixes: big_vision train checkpoints may store ``params/...`` or (old
  Flax optimizers) ``opt/target/...``.
* Pre-Linen numbering: vision_transformer npz files number submodules
  globally (``LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2,
  MlpBlock_3``), big_vision per class (``LayerNorm_0, LayerNorm_1,
  MultiHeadDotProductAttention_0, MlpBlock_0``). We renumber per class, as
  Flax's ``convert_pre_linen`` does, then map to our names.
* Position embedding: old files hold it in
  ``Transformer/posembed_input/pos_embedding`` (or
  ``Transformer/pos_embedding``) over all tokens, cls included; big_vision
  holds ``pos_embedding`` at the top over the patches only and adds it before
  concatenating cls, which equals a zero embedding for the cls slot. No
  position embedding at all means big_vision's fixed ``sincos2d``.
* Pooling: a ``cls`` parameter means cls-token pooling, else global average.
* Scanned encoders (``Transformer/encoderblock`` with a leading layer axis)
  are unstacked.
"""

import re
from typing import Any, Mapping

import numpy as np

from robustmq_jax.errors import UserError

_NUM_RE = re.compile(r'^(.+)_(\d+)$')


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict:
  tree: dict = {}
  for key, value in flat.items():
    *parents, leaf = key.split('/')
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = np.asarray(value)
  return tree


def _flatten(tree: Any, prefix: str = '') -> list[str]:
  if not isinstance(tree, dict):
    return [prefix]
  return [k for name, sub in tree.items()
          for k in _flatten(sub, f'{prefix}/{name}' if prefix else name)]


def _renumber(tree: Any) -> Any:
  """Per-class submodule numbering (what Flax's convert_pre_linen does)."""
  if not isinstance(tree, dict):
    return tree
  def order(name):
    m = _NUM_RE.match(name)
    return (m.group(1), int(m.group(2))) if m else (name, -1)
  out, counts = {}, {}
  for name in sorted(tree, key=order):
    m = _NUM_RE.match(name)
    new = name
    if m:
      counts[m.group(1)] = counts.get(m.group(1), -1) + 1
      new = f'{m.group(1)}_{counts[m.group(1)]}'
    out[new] = _renumber(tree[name])
  return out


def _strip_prefix(flat: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  for prefix in ('opt/target/', 'params/'):
    if any(k.startswith(prefix) for k in flat):
      return {k[len(prefix):]: v for k, v in flat.items()
              if k.startswith(prefix)}
  return dict(flat)


def _pop(tree: dict, path: str) -> Any:
  """Removes and returns tree[path] ('/'-separated), or None if absent."""
  *parents, leaf = path.split('/')
  node = tree
  for p in parents:
    node = node.get(p)
    if not isinstance(node, dict):
      return None
  return node.pop(leaf, None)


def vit_from_npz(flat: Mapping[str, np.ndarray], *, image_size: int,
                 depth: int) -> tuple[dict, dict[str, Any], list[str]]:
  """Maps a Google ViT npz (flat '/'-joined names) onto our `ViT` names.

  Args:
    flat: the npz contents.
    image_size: input side of the target architecture.
    depth: number of encoder blocks of the target architecture.

  Returns:
    (variables, model_kwargs, unused): the variable tree, the `ViT` field
    values the checkpoint implies (pool, posemb, representation_size) and the
    input keys not mapped.
  """
  tree = _renumber(_unflatten(_strip_prefix(flat)))
  enc = tree.get('Transformer', {})
  if 'MAPHead_0' in tree or 'probe' in tree:
    raise UserError('input has a MAP (attention-pooling) head, which '
                    'robustmq_jax ViTs do not model; use a checkpoint with '
                    "pool_type 'tok' or 'gap'.")
  if 'encoderblock' in enc:  # Scanned layers: leading axis is the layer.
    stacked = enc.pop('encoderblock')
    for i in range(depth):
      enc[f'encoderblock_{i}'] = _index(stacked, i)
  params: dict[str, Any] = {}
  kwargs: dict[str, Any] = {}
  kernel = _pop(tree, 'embedding/kernel')
  if kernel is None:
    raise UserError('input has no embedding/kernel; it is not a ViT npz '
                    'checkpoint.')
  params['embedding'] = {'kernel': kernel,
                         'bias': _pop(tree, 'embedding/bias')}
  cls = _pop(tree, 'cls')
  if cls is not None:
    params['cls'] = cls
  else:
    kwargs['pool'] = 'gap'
  grid = (image_size // kernel.shape[0]) ** 2
  pe = None
  for path in ('Transformer/posembed_input/pos_embedding',
               'Transformer/pos_embedding', 'pos_embedding'):
    pe = _pop(tree, path) if pe is None else pe
  if pe is None:
    kwargs['posemb'] = 'sincos2d'
  else:
    tokens = pe.shape[1]
    if tokens == grid and cls is not None:  # Added before the cls concat.
      pe = np.concatenate([np.zeros_like(pe[:, :1]), pe], axis=1)
    elif tokens != grid + (cls is not None):
      raise UserError(
          f'input position embedding has {tokens} tokens but a '
          f'{image_size}x{image_size} input with {kernel.shape[0]}px patches '
          f'has {grid} patches; convert a {image_size}px checkpoint.')
    params['Transformer'] = {'posembed_input': {'pos_embedding': pe}}
  encoder = params.setdefault('Transformer', {})
  renames = {'LayerNorm_0': 'LayerNorm_0', 'LayerNorm_1': 'LayerNorm_2',
             'MultiHeadDotProductAttention_0': 'MultiHeadDotProductAttention_1',
             'MlpBlock_0': 'MlpBlock_3'}
  for i in range(depth):
    block = enc.get(f'encoderblock_{i}', {})
    encoder[f'encoderblock_{i}'] = {
        ours: block.pop(theirs) for theirs, ours in renames.items()
        if theirs in block}
  if 'encoder_norm' in enc:
    encoder['encoder_norm'] = enc.pop('encoder_norm')
  if 'pre_logits' in tree:
    params['pre_logits'] = tree.pop('pre_logits')
    kwargs['representation_size'] = int(
        params['pre_logits']['kernel'].shape[-1])
  if 'head' in tree:
    params['head'] = tree.pop('head')
  params = _drop_none(params)
  unused = [k for k in _flatten(_drop_empty(tree))]
  return {'params': params}, kwargs, unused


def _index(tree: Any, i: int) -> Any:
  if isinstance(tree, dict):
    return {k: _index(v, i) for k, v in tree.items()}
  return tree[i]


def _drop_none(tree: dict) -> dict:
  return {k: _drop_none(v) if isinstance(v, dict) else v
          for k, v in tree.items() if v is not None}


def _drop_empty(tree: Any) -> Any:
  if not isinstance(tree, dict):
    return tree
  out = {k: _drop_empty(v) for k, v in tree.items()}
  return {k: v for k, v in out.items() if not (isinstance(v, dict) and not v)}
