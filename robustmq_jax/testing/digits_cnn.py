"""Shared fixtures of the attack tests: a small CNN on scikit-learn digits.

The same network exists in Flax (NHWC) and, for the reference comparisons, in
PyTorch (NCHW) with the Flax weights copied in. It trains in a few seconds
with a fixed seed on the first 1000 digits; the other 797 are attacked.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

N_TRAIN = 1000
SIDE = 16          # 8x8 digits upscaled (nearest) to 16x16, one channel.


class DigitsCNN(nn.Module):
  """conv3x3(8) - relu - conv3x3/2(16) - relu - dense(10), explicit pads."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (3, 3), padding=((1, 1), (1, 1)), name='c1')(x))
    x = nn.relu(nn.Conv(16, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                        name='c2')(x))
    return nn.Dense(10, name='head')(x.reshape(x.shape[0], -1))


@functools.lru_cache(maxsize=None)
def digits():
  """(train_x, train_y, test_x, test_y): float32 NHWC in [0, 1], int32."""
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  d = load_digits()
  x = (d.images / 16.0).astype(np.float32)
  x = np.kron(x, np.ones((1, 2, 2), np.float32))[..., None]
  y = d.target.astype(np.int32)
  return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]


@functools.lru_cache(maxsize=None)
def trained_params(steps: int = 100, batch: int = 100, seed: int = 0):
  """Adam on minibatches of the training digits (seconds on a CPU)."""
  xtr, ytr, _, _ = digits()
  model = DigitsCNN()
  params = model.init(jax.random.key(seed), xtr[:1])
  opt = optax.adam(1e-2)
  state = opt.init(params)
  order = np.random.default_rng(seed).permutation(
      np.resize(np.arange(N_TRAIN), steps * batch)).reshape(steps, batch)

  @jax.jit
  def train(params, state):
    def step(carry, idx):
      params, state = carry
      def loss(p):
        logits = model.apply(p, jnp.asarray(xtr)[idx])
        return optax.softmax_cross_entropy_with_integer_labels(
            logits, jnp.asarray(ytr)[idx]).mean()
      updates, state = opt.update(jax.grad(loss)(params), state)
      return (optax.apply_updates(params, updates), state), None
    return jax.lax.scan(step, (params, state), order)[0][0]

  return train(params, state)


def logits_fn(params=None):
  params = trained_params() if params is None else params
  return lambda x: DigitsCNN().apply(params, x)


def torch_twin(params=None):
  """The same network in PyTorch (eval mode, NCHW input) with copied weights."""
  import torch  # pylint: disable=g-import-not-at-top
  params = trained_params() if params is None else params
  p = jax.tree.map(np.asarray, params)['params']

  class Net(torch.nn.Module):

    def __init__(self):
      super().__init__()
      self.c1 = torch.nn.Conv2d(1, 8, 3, padding=1)
      self.c2 = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)
      self.head = torch.nn.Linear(8 * 8 * 16, 10)

    def forward(self, x):
      x = torch.relu(self.c1(x))
      x = torch.relu(self.c2(x))
      return self.head(x.permute(0, 2, 3, 1).flatten(1))

  net = Net()
  with torch.no_grad():
    for name in ('c1', 'c2'):
      conv = getattr(net, name)
      conv.weight.copy_(torch.from_numpy(
          p[name]['kernel'].transpose(3, 2, 0, 1).copy()))
      conv.bias.copy_(torch.from_numpy(p[name]['bias']))
    net.head.weight.copy_(torch.from_numpy(p['head']['kernel'].T.copy()))
    net.head.bias.copy_(torch.from_numpy(p['head']['bias']))
  return net.eval()


def to_nchw(x):
  import torch  # pylint: disable=g-import-not-at-top
  return torch.from_numpy(np.ascontiguousarray(
      np.asarray(x).transpose(0, 3, 1, 2)))


def to_nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


def accuracy(fn, x, y) -> float:
  return float(jnp.mean(jnp.argmax(fn(jnp.asarray(x)), -1) == y))
