"""Supervised training of a classifier: recipe, loss, the step and `fit`.

`make_train_step` is the one optimiser step (augmentation, loss, update);
`fit` runs it over in-memory uint8 images, data-parallel over the one mesh
(sample checkpoints, the main job's QAT, the defenses), and the QAT job
(`robustmq_jax.train`) runs it over a streaming input with checkpoints.
Hooks let callers add a regulariser (Defensive Quantization's orthogonality
penalty) or replace the inputs (PGD adversarial training) without copying
the step.
"""

import dataclasses
import time
from typing import Any, Callable

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from robustmq_jax.evaluation import mesh as mesh_lib
from robustmq_jax.xla_cpu import conv_layout

# penalty(params) -> scalar added to the loss.
Penalty = Callable[[Any], jax.Array]
# perturb(key, logits_fn, images, labels) -> images (e.g. PGD).
Perturb = Callable[[jax.Array, Callable, jax.Array, jax.Array], jax.Array]
# step(variables, opt_state, images, labels, key) -> (variables, opt_state,
# loss); see `make_train_step`.
TrainStep = Callable[[Any, Any, jax.Array, jax.Array, jax.Array],
                     tuple[Any, Any, jax.Array]]


@dataclasses.dataclass(frozen=True)
class Recipe:
  """Optimiser and schedule.

  Attributes:
    steps: optimiser steps.
    batch_size: global batch.
    learning_rate: peak learning rate (cosine decay after linear warm-up).
    warmup_steps: linear warm-up steps.
    weight_decay: decoupled weight decay (AdamW) or L2 (SGD).
    optimizer: 'adamw' or 'sgd' (Nesterov momentum 0.9, MQBench-style).
    label_smoothing: as in MQBench's QAT recipe (0.1) or 0.
    pad_crop: random-crop padding in pixels (0 disables augmentation).
  """
  steps: int = 1000
  batch_size: int = 64
  learning_rate: float = 1e-3
  warmup_steps: int = 50
  weight_decay: float = 1e-4
  optimizer: str = 'adamw'
  label_smoothing: float = 0.0
  pad_crop: int = 2

  def make_optimizer(self) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, self.learning_rate, max(self.warmup_steps, 1),
        max(self.steps, self.warmup_steps + 1))
    if self.optimizer == 'sgd':
      return optax.chain(optax.add_decayed_weights(self.weight_decay),
                         optax.sgd(schedule, momentum=0.9, nesterov=True))
    return optax.adamw(schedule, weight_decay=self.weight_decay)


def cross_entropy(logits: jax.Array, labels: jax.Array,
                  smoothing: float = 0.0) -> jax.Array:
  """Mean softmax cross-entropy with optional label smoothing."""
  onehot = jax.nn.one_hot(labels, logits.shape[-1])
  if smoothing:
    onehot = optax.smooth_labels(onehot, smoothing)
  return jnp.mean(optax.softmax_cross_entropy(logits, onehot))


def _augment(key: jax.Array, images: jax.Array, pad: int) -> jax.Array:
  """Random crops after edge padding (no flips: digits are not symmetric)."""
  if not pad:
    return images
  n, h, w, _ = images.shape
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)),
                   mode='edge')
  offs = jax.random.randint(key, (n, 2), 0, 2 * pad + 1)
  crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0),
                                              (h, w, img.shape[-1]))
  return jax.vmap(crop)(padded, offs)


def make_train_step(module: nn.Module, recipe: Recipe,
                    tx: optax.GradientTransformation, *,
                    penalty: Penalty | None = None,
                    perturb: Perturb | None = None,
                    trainable: str = 'params') -> TrainStep:
  """One optimiser step, a pure function (not jitted; callers jit it).

  ``step(variables, opt_state, images, labels, key) -> (variables,
  opt_state, loss)``: uint8 NHWC images, int32 labels; `key` drives the
  random crop (`recipe.pad_crop`) and `perturb`. BatchNorm runs on batch
  statistics and its running statistics are updated (when the variables
  hold 'batch_stats'). The loss is the batch mean; under a global-view jit
  over a data-parallel mesh the batch is the global batch, so the result
  does not depend on the device count.
  """

  def loss_fn(train_vars, other, x, y):
    v = dict(other, **{trainable: train_vars})
    if 'batch_stats' in v:
      logits, new = module.apply(v, x, train=True, mutable=['batch_stats'])
    else:
      logits, new = module.apply(v, x, train=True), {}
    loss = cross_entropy(logits, y, recipe.label_smoothing)
    if penalty is not None:
      loss = loss + penalty(train_vars)
    return loss, new

  def step(variables, opt_state, x, y, k):
    k_aug, k_adv = jax.random.split(k)
    x = _augment(k_aug, x.astype(jnp.float32) / 255.0, recipe.pad_crop)
    if perturb is not None:
      x = perturb(k_adv, lambda z: module.apply(variables, z, train=False),
                  x, y)
    other = {c: v for c, v in variables.items() if c != trainable}
    value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)
    if conv_layout.wanted():
      # XLA:CPU runs grouped / depthwise convolutions and their gradients
      # 5-20x faster as per-tap products (RegNet, MobileNet).
      value_and_grad = conv_layout.canonical_convs(value_and_grad)
    (loss, new), grads = value_and_grad(variables[trainable], other, x, y)
    updates, opt_state = tx.update(grads, opt_state, variables[trainable])
    variables = dict(variables, **new)
    variables[trainable] = optax.apply_updates(variables[trainable], updates)
    return variables, opt_state, loss

  return step


def fit(module: nn.Module, variables: Any, images: np.ndarray,
        labels: np.ndarray, recipe: Recipe, *, key: jax.Array,
        mesh: jax.sharding.Mesh | None = None,
        penalty: Penalty | None = None, perturb: Perturb | None = None,
        trainable: str = 'params', log_every: int = 100
        ) -> tuple[Any, list[float]]:
  """Trains `module` on in-memory arrays; returns (variables, losses).

  The whole run in one call, without checkpoints (sample models, the main
  job's cached QAT, the defenses). `robustmq_jax.train` runs the same
  `make_train_step` with a streaming input, orbax checkpoints and resume.

  Args:
    module: a classifier, `module.apply(variables, x, train=...)`.
    variables: initial variables ('params', optional 'batch_stats' and any
      other collection, e.g. quantizer scales, carried unchanged unless in
      `trainable`).
    images: uint8 NHWC training images.
    labels: int labels.
    recipe: optimiser and schedule.
    key: PRNG key (batch order, augmentation, perturbation).
    mesh: data-parallel mesh (default: all devices).
    penalty: optional regulariser of the trainable collection.
    perturb: optional input perturbation applied to each (augmented) batch
      with the current model (adversarial training).
    trainable: the variable collection the optimiser updates.
    log_every: steps between log lines.

  Returns:
    Trained variables and the loss history.
  """
  mesh = mesh or mesh_lib.make_mesh()
  tx = recipe.make_optimizer()
  variables = dict(variables)
  opt_state = tx.init(variables[trainable])
  n_dev = mesh.devices.size
  batch = max(n_dev, recipe.batch_size - recipe.batch_size % n_dev)
  step = jax.jit(make_train_step(module, recipe, tx, penalty=penalty,
                                 perturb=perturb, trainable=trainable))

  rng = np.random.default_rng(int(jax.random.randint(key, (), 0, 2**31 - 1)))
  order = np.array([], np.int64)
  losses = []
  start = time.perf_counter()
  for i in range(recipe.steps):
    if len(order) < batch:
      order = np.concatenate([order, rng.permutation(len(images))])
    idx, order = order[:batch], order[batch:]
    x, y = mesh_lib.to_global(
        mesh, {'x': images[idx], 'y': labels[idx].astype(np.int32)}).values()
    variables, opt_state, loss = step(variables, opt_state, x, y,
                                      jax.random.fold_in(key, i))
    losses.append(float(loss))
    if log_every and (i + 1) % log_every == 0:
      logging.info('step %d/%d loss %.4f (%.1f s)', i + 1, recipe.steps,
                   np.mean(losses[-log_every:]), time.perf_counter() - start)
  return jax.device_get(variables), losses


def accuracy(module: nn.Module, variables: Any, images: np.ndarray,
             labels: np.ndarray, batch_size: int = 256) -> float:
  """Top-1 accuracy on in-memory uint8 images (single device, for scripts)."""
  apply = jax.jit(lambda v, x: module.apply(v, x.astype(jnp.float32) / 255.0,
                                            train=False))
  correct = 0
  for i in range(0, len(images), batch_size):
    logits = apply(variables, images[i:i + batch_size])
    correct += int(np.sum(np.argmax(logits, -1) == labels[i:i + batch_size]))
  return correct / len(images)
