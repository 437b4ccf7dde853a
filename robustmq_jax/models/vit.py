"""Vision Transformer with the Google ViT (npz) parameter layout.

Parameter names follow google-research/vision_transformer, so the npz
checkpoints load by name and timm state dicts convert mechanically:
``embedding``, ``cls``, ``Transformer/posembed_input/pos_embedding``,
``Transformer/encoderblock_{i}/{LayerNorm_0, MultiHeadDotProductAttention_1,
LayerNorm_2, MlpBlock_3}``, ``Transformer/encoder_norm``, ``head``.
Attention is written out (not `nn.MultiHeadDotProductAttention`) so the two
activation-activation contractions, QK^T and PV, go through `Ops.einsum`.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from robustmq_jax.models.normalize import IMAGENET_MEAN
from robustmq_jax.models.normalize import IMAGENET_STD
from robustmq_jax.models.normalize import normalize
from robustmq_jax.models.ops import FLOAT_OPS
from robustmq_jax.models.ops import Ops
from robustmq_jax.models.ops import Role

_LN_EPS = 1e-6  # timm and Google ViTs both use 1e-6.
_DENSE_INIT = nn.initializers.xavier_uniform()
_BIAS_INIT = nn.initializers.normal(stddev=1e-6)


def _layer_norm(name: str) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=_LN_EPS, name=name)


class MultiHeadAttention(nn.Module):
  """Self-attention with DenseGeneral-shaped kernels (npz layout).

  query/key/value kernels are (D, heads, head_dim), out is
  (heads, head_dim, D). Role paths: ``{role_prefix}/{query,key,value,out}``
  for the projections, ``{role_prefix}/qk`` and ``{role_prefix}/pv`` for the
  attention einsums.
  """
  num_heads: int
  role_prefix: str
  ops: Ops = FLOAT_OPS

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ops, width = self.ops, x.shape[-1]
    head_dim = width // self.num_heads

    def proj(name):
      return nn.DenseGeneral(
          (self.num_heads, head_dim), axis=-1, kernel_init=_DENSE_INIT,
          dot_general_cls=ops.dot_general_cls(
              Role(f'{self.role_prefix}/{name}', 'dense')),
          name=name)(x)

    q, k, v = proj('query'), proj('key'), proj('value')
    q = q * (head_dim ** -0.5)
    logits = ops.einsum(Role(f'{self.role_prefix}/qk', 'einsum'))(
        'bqhd,bkhd->bhqk', q, k)
    weights = jax.nn.softmax(logits, axis=-1)
    out = ops.einsum(Role(f'{self.role_prefix}/pv', 'einsum'))(
        'bhqk,bkhd->bqhd', weights, v)
    return nn.DenseGeneral(
        width, axis=(-2, -1), kernel_init=_DENSE_INIT,
        dot_general_cls=ops.dot_general_cls(
            Role(f'{self.role_prefix}/out', 'dense')),
        name='out')(out)


class MlpBlock(nn.Module):
  """Dense -> GELU -> Dense."""
  mlp_dim: int
  role_prefix: str
  gelu_approximate: bool = False
  ops: Ops = FLOAT_OPS

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    width = x.shape[-1]
    for i, features in enumerate((self.mlp_dim, width)):
      name = f'Dense_{i}'
      x = nn.Dense(
          features, kernel_init=_DENSE_INIT, bias_init=_BIAS_INIT,
          dot_general_cls=self.ops.dot_general_cls(
              Role(f'{self.role_prefix}/{name}', 'dense')),
          name=name)(x)
      if i == 0:
        x = nn.gelu(x, approximate=self.gelu_approximate)
    return x


class EncoderBlock(nn.Module):
  """Pre-norm transformer block."""
  num_heads: int
  mlp_dim: int
  role_prefix: str
  gelu_approximate: bool = False
  ops: Ops = FLOAT_OPS

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    p = self.role_prefix
    y = _layer_norm('LayerNorm_0')(x)
    y = MultiHeadAttention(
        self.num_heads, f'{p}/MultiHeadDotProductAttention_1', self.ops,
        name='MultiHeadDotProductAttention_1')(y)
    x = x + y
    y = _layer_norm('LayerNorm_2')(x)
    y = MlpBlock(self.mlp_dim, f'{p}/MlpBlock_3', self.gelu_approximate,
                 self.ops, name='MlpBlock_3')(y)
    return x + y


class AddPositionEmbs(nn.Module):
  """Learned position embedding over all tokens (cls included)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    pe = self.param('pos_embedding', nn.initializers.normal(stddev=0.02),
                    (1,) + x.shape[1:])
    return x + pe


class Encoder(nn.Module):
  """Position embedding (if learned), blocks and the final LayerNorm."""
  depth: int
  num_heads: int
  mlp_dim: int
  learned_posemb: bool = True
  gelu_approximate: bool = False
  ops: Ops = FLOAT_OPS

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.learned_posemb:
      x = AddPositionEmbs(name='posembed_input')(x)
    for i in range(self.depth):
      name = f'encoderblock_{i}'
      x = EncoderBlock(self.num_heads, self.mlp_dim, f'Transformer/{name}',
                       self.gelu_approximate, self.ops, name=name)(x)
    return _layer_norm('encoder_norm')(x)


def posemb_sincos_2d(h: int, w: int, width: int,
                     temperature: float = 10_000.) -> np.ndarray:
  """Fixed 2-D sin-cos position embedding (big_vision `posemb='sincos2d'`)."""
  y, x = np.mgrid[:h, :w]
  omega = np.arange(width // 4) / (width // 4 - 1)
  omega = 1. / (temperature ** omega)
  y = np.einsum('m,d->md', y.flatten(), omega)
  x = np.einsum('m,d->md', x.flatten(), omega)
  pe = np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)
  return pe[None].astype(np.float32)


class ViT(nn.Module):
  """Vision Transformer classifier on [0, 1] NHWC images.

  Attributes:
    num_classes: number of logits.
    patch_size: side of the square patches.
    hidden_size: token width D.
    depth: number of encoder blocks.
    num_heads: attention heads.
    mlp_dim: hidden width of the MLP blocks.
    pool: 'token' (cls token, timm/npz default) or 'gap' (mean of tokens; no
      cls parameter).
    posemb: 'learn' (parameter ``Transformer/posembed_input/pos_embedding``
      over all tokens, cls included) or 'sincos2d' (fixed, patches only).
    representation_size: width of the optional tanh ``pre_logits`` layer of
      ImageNet-21k checkpoints; None for none.
    gelu_approximate: False for exact erf GELU (timm, PyTorch), True for the
      tanh approximation (Google npz checkpoints).
    mean: per-channel input mean (applied inside the model).
    std: per-channel input std.
    ops: contraction implementations (float by default).
  """
  num_classes: int
  patch_size: int = 16
  hidden_size: int = 384
  depth: int = 12
  num_heads: int = 6
  mlp_dim: int = 1536
  pool: str = 'token'
  posemb: str = 'learn'
  representation_size: int | None = None
  gelu_approximate: bool = False
  mean: Sequence[float] = IMAGENET_MEAN
  std: Sequence[float] = IMAGENET_STD
  ops: Ops = FLOAT_OPS

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    del train  # No dropout or batch statistics.
    ops, p = self.ops, self.patch_size
    x = normalize(images, self.mean, self.std)
    x = nn.Conv(
        self.hidden_size, (p, p), strides=(p, p), padding='VALID',
        conv_general_dilated_cls=ops.conv_general_dilated_cls(
            Role('embedding', 'conv', first=True)),
        name='embedding')(x)
    n, h, w, c = x.shape
    x = jnp.reshape(x, (n, h * w, c))
    if self.posemb == 'sincos2d':
      x = x + jnp.asarray(posemb_sincos_2d(h, w, c), x.dtype)
    elif self.posemb != 'learn':
      raise ValueError(f'unknown posemb {self.posemb!r}')
    if self.pool == 'token':
      cls = self.param('cls', nn.initializers.zeros, (1, 1, c))
      # zeros_like(x[:, :1]) keeps x's batch sharding (explicit meshes).
      x = jnp.concatenate([jnp.zeros_like(x[:, :1]) + cls.astype(x.dtype),
                           x], axis=1)
    elif self.pool != 'gap':
      raise ValueError(f'unknown pool {self.pool!r}')
    x = Encoder(self.depth, self.num_heads, self.mlp_dim,
                self.posemb == 'learn', self.gelu_approximate, ops,
                name='Transformer')(x)
    x = x[:, 0] if self.pool == 'token' else jnp.mean(x, axis=1)
    if self.representation_size is not None:
      x = nn.Dense(
          self.representation_size,
          dot_general_cls=ops.dot_general_cls(Role('pre_logits', 'dense')),
          name='pre_logits')(x)
      x = jnp.tanh(x)
    return nn.Dense(
        self.num_classes,
        dot_general_cls=ops.dot_general_cls(Role('head', 'dense', last=True)),
        name='head')(x)
