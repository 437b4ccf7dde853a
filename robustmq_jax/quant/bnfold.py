"""BatchNorm folding (MQBench academic ``bnfold``, PyTorch-style).

A convolution followed by a BatchNorm computes, in eval mode,

  y = gamma * (conv(x, w) - mu) / sigma + beta,  sigma = sqrt(var + eps)
    = conv(x, w * f) + (beta - f * mu),          f = gamma / sigma

(f per output channel: the last axis of a Flax HWIO kernel, grouped and
depthwise kernels included). Folding replaces the kernel by ``w * f``, so
the *folded* kernel is what the quantizer calibrates and rounds, as on an
integer target that has no BatchNorm. The model code is unchanged: the
BatchNorm stays, turned into the bias-only affine map ``x + (beta - f mu)``
(scale 1, mean 0, variance 1 - eps), which keeps the variable tree and
every Role path of the unfolded model.

`conv_bn_pairs` finds the pairs by tracing the model once (no names
assumed): a BatchNorm whose input is exactly a bias-free conv's output.
"""

import dataclasses
from typing import Any, Collection

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class ConvBn:
  """One foldable pair.

  Attributes:
    conv: Flax module path of the conv ('/'-separated; its Role path).
    bn: Flax module path of the BatchNorm that consumes its output.
    epsilon: the BatchNorm's epsilon.
  """
  conv: str
  bn: str
  epsilon: float


def conv_bn_pairs(module: nn.Module, image_size: int) -> list[ConvBn]:
  """Every bias-free conv whose output feeds exactly into a BatchNorm.

  Args:
    module: a model of `robustmq_jax.models` (any `Ops`).
    image_size: input side.

  Returns:
    The pairs in program order.
  """
  convs: dict[int, tuple[str, Any]] = {}
  pairs: list[ConvBn] = []

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    m = context.module
    if context.method_name != '__call__':
      return out
    path = '/'.join(str(p) for p in m.path)
    if isinstance(m, nn.Conv) and not m.use_bias:
      convs[id(out)] = (path, out)  # Keep `out` alive: ids stay unique.
    elif isinstance(m, nn.BatchNorm) and args and id(args[0]) in convs:
      pairs.append(ConvBn(convs[id(args[0])][0], path, float(m.epsilon)))
    return out

  x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  with nn.intercept_methods(interceptor):
    jax.eval_shape(module.init, jax.random.key(0), x)
  return pairs


def _node(tree: Any, path: str) -> Any:
  for p in path.split('/'):
    tree = tree[p]
  return tree


def traced_fold_factor(module: nn.Module, pair_bn: str,
                       epsilon: float) -> jax.Array | None:
  """f of a BatchNorm read inside a running ``apply`` (QAT), or None.

  Called from a module of the same model (a quantized conv site): reads the
  BatchNorm's current scale and running variance from the root variables,
  so the gradient reaches gamma as in PyTorch's ConvBn2d. None while
  initialising (the BatchNorm may not exist yet).
  """
  if module.is_initializing():
    return None
  root = module.scope.root.variables()
  gamma = _node(root['params'], pair_bn)['scale']
  var = _node(root['batch_stats'], pair_bn)['var']
  f = gamma * jax.lax.rsqrt(var + epsilon)
  return jnp.where(f == 0, jnp.ones_like(f) * 1e-12, f)


def fold_factors(variables: dict[str, Any], pair: ConvBn) -> np.ndarray:
  """f = gamma / sqrt(running_var + eps), per output channel (float32)."""
  bn_p = _node(variables['params'], pair.bn)
  bn_s = _node(variables['batch_stats'], pair.bn)
  var = np.asarray(bn_s['var'], np.float64)
  return (np.asarray(bn_p['scale'], np.float64) /
          np.sqrt(var + pair.epsilon)).astype(np.float32)


def fold_batchnorm(variables: dict[str, Any], pairs: list[ConvBn],
                   folded_kernels: Collection[str] = ()) -> dict[str, Any]:
  """The variables with every pair's BatchNorm folded into its conv.

  Args:
    variables: numpy variables with 'params' and 'batch_stats'.
    pairs: from `conv_bn_pairs`.
    folded_kernels: conv paths whose kernels already hold ``w * f`` (QAT's
      export); only their BatchNorm is turned into the folded bias.

  Returns:
    A new tree (inputs unchanged): folded kernels ``w * f``; each BatchNorm
    scale 1, bias ``beta - f * mu``, mean 0 and variance ``1 - eps`` (so
    its eval-mode output is its input plus the folded bias). Equal to the
    input model in eval mode up to float rounding.
  """
  out = jax.tree.map(lambda a: np.array(a, copy=True), variables)
  for pair in pairs:
    f = fold_factors(variables, pair)
    conv = _node(out['params'], pair.conv)
    bn_p = _node(out['params'], pair.bn)
    bn_s = _node(out['batch_stats'], pair.bn)
    mu = np.asarray(bn_s['mean'], np.float32)
    if pair.conv not in folded_kernels:
      conv['kernel'] = (np.asarray(conv['kernel'], np.float32) * f).astype(
          np.float32)
    bn_p['bias'] = (np.asarray(bn_p['bias'], np.float32) - f * mu).astype(
        np.float32)
    bn_p['scale'] = np.ones_like(bn_p['scale'], np.float32)
    bn_s['mean'] = np.zeros_like(bn_s['mean'], np.float32)
    bn_s['var'] = np.full_like(bn_s['var'], 1.0 - pair.epsilon, np.float32)
  return out
