"""Per-example attack losses on logits, and the loss-gradient primitive.

Every loss maps logits [B, C] (and labels [B]) to a per-example value [B]
that the attacker *maximises*. Logits are promoted to float32 first, so a
bfloat16 model still gets float32 losses.
"""

from typing import Callable

import jax
import jax.numpy as jnp

from robustmq_jax.xla_cpu import conv_layout
from robustmq_jax.errors import invalid

# loss(logits, labels) -> [B]; larger is better for the attacker.
LossFn = Callable[[jax.Array, jax.Array], jax.Array]


def _f32(logits: jax.Array) -> jax.Array:
  return logits.astype(jnp.float32)


def label_logit(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """The logit of each example's label: [B, C], [B] -> [B]."""
  return jnp.take_along_axis(
      _f32(logits), labels[:, None].astype(jnp.int32), axis=-1)[:, 0]


def best_other_logit(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """The largest logit among the classes other than the label."""
  logits = _f32(logits)
  onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.bool_)
  return jnp.max(jnp.where(onehot, -jnp.inf, logits), axis=-1)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Softmax cross-entropy of the label, per example."""
  logp = jax.nn.log_softmax(_f32(logits), axis=-1)
  return -label_logit(logp, labels)


def margin(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Carlini-Wagner margin, best other logit minus the label's logit.

  Positive exactly when the example is misclassified.
  """
  return best_other_logit(logits, labels) - label_logit(logits, labels)


def dlr(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Difference-of-logits ratio (Croce & Hein 2020), untargeted.

  ``-(z_y - max_{j != y} z_j) / (z_(1) - z_(3))`` with z_(k) the k-th largest
  logit; invariant to shifting and scaling the logits. Needs >= 3 classes.
  """
  top = jax.lax.top_k(_f32(logits), 3)[0]
  return margin(logits, labels) / (top[:, 0] - top[:, 2] + 1e-12)


def dlr_targeted(logits: jax.Array, labels: jax.Array,
                 targets: jax.Array) -> jax.Array:
  """Targeted DLR: ``-(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2)``.

  Needs >= 4 classes.
  """
  top = jax.lax.top_k(_f32(logits), 4)[0]
  diff = label_logit(logits, targets) - label_logit(logits, labels)
  return diff / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


_UNTARGETED = {'ce': cross_entropy, 'margin': margin, 'dlr': dlr}


def get_loss(name: str, *, field: str = 'loss') -> LossFn:
  """Looks up an untargeted loss by name ('ce', 'margin' or 'dlr')."""
  if name not in _UNTARGETED:
    raise invalid(field, name, sorted(_UNTARGETED))
  return _UNTARGETED[name]


def num_classes(logits_fn: Callable[[jax.Array], jax.Array],
                x: jax.Array) -> int:
  """The number of classes, from the output shape (no computation)."""
  return int(jax.eval_shape(logits_fn, x).shape[-1])


def loss_and_grad(
    logits_fn: Callable[[jax.Array], jax.Array],
    loss_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-example loss, logits and input gradient in one forward + backward.

  Args:
    logits_fn: images -> logits.
    loss_fn: logits -> per-example loss [B] (labels closed over).
    x: images [B, ...].

  Returns:
    (loss [B], logits [B, C] float32, d sum(loss) / dx, shaped like x).
    Examples do not interact (inference-mode models), so the gradient of the
    summed loss is each example's own gradient. On CPU the convolutions are
    put in XLA's canonical layout (`conv_layout`), so this costs the same
    inside an attack's step loop as one jitted call outside it.
  """

  def total(x):
    logits = _f32(logits_fn(x))
    values = loss_fn(logits)
    return jnp.sum(values), (values, logits)

  value_and_grad = jax.value_and_grad(total, has_aux=True)
  if conv_layout.wanted():
    value_and_grad = conv_layout.canonical_convs(value_and_grad)
  (_, (values, logits)), grad = value_and_grad(x)
  return values, logits, grad


def predicts(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """True where the arg-max class equals the label."""
  return jnp.argmax(logits, axis=-1) == labels
