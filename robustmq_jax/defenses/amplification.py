"""Error amplification: how an input perturbation grows layer by layer.

Defensive Quantization (Lin, Gan, Han, ICLR 2019) explains why quantized
models can be less robust than float ones: a small adversarial perturbation
grows through the layers, and in deep layers it pushes activations across
quantization buckets, so the quantized network amplifies it more. We measure,
for a model and a perturbation delta,

  gain_l     = || h_l(x + delta) - h_l(x) ||_2 / || delta ||_2
  relative_l = || h_l(x + delta) - h_l(x) ||_2 / || h_l(x) ||_2

per example at every recorded layer output h_l, for float and quantized
models alike. Layer outputs are captured with `flax.linen.intercept_methods`
around any ``apply(variables, images)`` function, so this works on a
`ModelUnderTest` without access to its module (the quantized models wrap
their contractions inside the same `nn.Conv` / `nn.Dense` modules, so the
layer names agree across precisions).
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from robustmq_jax.models import resnet
from robustmq_jax.models import vit

GRANULARITIES = ('blocks', 'layers')
_WEIGHT_TYPES = (nn.Conv, nn.Dense, nn.DenseGeneral)
_BLOCK_TYPES = (resnet.BasicBlock, resnet.Bottleneck, vit.EncoderBlock)
_TINY = 1e-12

ApplyFn = Callable[[Any, jax.Array], jax.Array]


def _module_name(module: nn.Module) -> str:
  return '/'.join(str(p) for p in module.path)


def layer_outputs(apply: ApplyFn, variables: Any, images: jax.Array, *,
                  granularity: str = 'blocks'
                  ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Runs `apply` and returns (logits, {layer name: output}) in call order.

  Args:
    apply: ``(variables, images) -> logits``; traced here, so call this
      inside `jax.jit` for speed.
    variables: the model's variables.
    images: float images in [0, 1].
    granularity: 'layers' (every Conv / Dense / DenseGeneral output) or
      'blocks' (the first weight layer, every residual / encoder block and
      the classifier head).

  Returns:
    The logits and the outputs, keyed by module path.
  """
  if granularity not in GRANULARITIES:
    raise ValueError(f'granularity={granularity!r}; allowed: {GRANULARITIES}')
  found: dict[str, jax.Array] = {}
  weights: list[str] = []

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    module = context.module
    if context.method_name != '__call__':
      return out
    if isinstance(module, _WEIGHT_TYPES):
      name = _module_name(module)
      weights.append(name)
      if granularity == 'layers':
        found.setdefault(name, out)
      else:
        found.setdefault('#weight:' + name, out)
    elif granularity == 'blocks' and isinstance(module, _BLOCK_TYPES):
      found.setdefault(_module_name(module), out)
    return out

  with nn.intercept_methods(interceptor):
    logits = apply(variables, images)
  if granularity == 'blocks':
    # Keep the blocks plus the first and the last weight layer.
    keep = {'#weight:' + weights[0], '#weight:' + weights[-1]} if weights \
        else set()
    found = {k.removeprefix('#weight:'): v for k, v in found.items()
             if not k.startswith('#weight:') or k in keep}
  return logits, found


def _norm(x: jax.Array) -> jax.Array:
  """Per-example L2 norm over all but the first axis."""
  return jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)).reshape(
      x.shape[0], -1), axis=1))


def amplification(apply: ApplyFn, variables: Any, images: jax.Array,
                  delta: jax.Array, *, granularity: str = 'blocks'
                  ) -> tuple[jax.Array, dict[str, jax.Array],
                             dict[str, jax.Array]]:
  """Per-example gain and relative change of every layer under `delta`.

  Args:
    apply: ``(variables, images) -> logits``.
    variables: its variables.
    images: clean images [B, H, W, C] in [0, 1].
    delta: the perturbation (``images + delta`` must stay in [0, 1]).
    granularity: see `layer_outputs`.

  Returns:
    (logits on the perturbed images, {layer: gain [B]}, {layer: relative
    [B]}). The last layer is the classifier head (the logits).
  """
  clean_logits, clean = layer_outputs(apply, variables, images,
                                      granularity=granularity)
  del clean_logits
  adv_logits, adv = layer_outputs(apply, variables, images + delta,
                                  granularity=granularity)
  d = jnp.maximum(_norm(delta), _TINY)
  gains, rel = {}, {}
  for name, h in clean.items():
    diff = _norm(adv[name] - h)
    gains[name] = diff / d
    rel[name] = diff / jnp.maximum(_norm(h), _TINY)
  return adv_logits, gains, rel


def layer_order(apply: ApplyFn, variables: Any, image_shape: tuple[int, ...],
                *, granularity: str = 'blocks') -> list[str]:
  """Names of `layer_outputs` in call order (jit returns dicts sorted by key).

  Traced abstractly with `jax.eval_shape`; nothing is computed.
  """
  names = []

  def run(v, x):
    _, found = layer_outputs(apply, v, x, granularity=granularity)
    names.extend(found)
    return 0

  jax.eval_shape(run, variables,
                 jax.ShapeDtypeStruct((1,) + tuple(image_shape), jnp.float32))
  return names


def short_name(name: str) -> str:
  """'Transformer/encoderblock_3' -> 'block3'; 'layer2_1' -> 'layer2_1'."""
  if name.startswith('Transformer/encoderblock_'):
    return 'block' + name.rsplit('_', 1)[1]
  return name
